import Crypto
import Foundation
import SwiftASN1
import X509

/// Certificates made for one test: a CA and leaves it signs, with the names and validity a
/// test needs (a proxy's IP address only, another host, expired, …).
struct TestCertificateAuthority {
    let key: P256.Signing.PrivateKey
    let certificate: Certificate
    let name: DistinguishedName

    var pem: String {
        get throws { try certificate.serializeAsPEM().pemString }
    }

    init(commonName: String = "iothub-sidecar test CA") throws {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName(commonName) }
        let now = Date()
        self.key = key
        self.name = name
        certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: Certificate.PrivateKey(key).publicKey,
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(86_400), issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: Certificate.PrivateKey(key).publicKey)
            },
            issuerPrivateKey: Certificate.PrivateKey(key))
    }

    /// A server certificate for `names` (DNS names and IP addresses, as text), valid over
    /// `validity` (from one hour ago for a day, unless given).
    func serverCertificate(names: [String], validity: ClosedRange<Date>? = nil) throws -> TestServerIdentity {
        let serverKey = P256.Signing.PrivateKey()
        let now = Date()
        let alternativeNames = names.map { name -> GeneralName in
            if let bytes = Self.ipAddressBytes(name) {
                return .ipAddress(ASN1OctetString(contentBytes: ArraySlice(bytes)))
            }
            return .dnsName(name)
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(),
            publicKey: Certificate.PrivateKey(serverKey).publicKey,
            notValidBefore: validity?.lowerBound ?? now.addingTimeInterval(-3600),
            notValidAfter: validity?.upperBound ?? now.addingTimeInterval(86_400),
            issuer: name, subject: try DistinguishedName { CommonName(names.first ?? "server") },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyAgreement: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(alternativeNames)
            },
            issuerPrivateKey: Certificate.PrivateKey(key))
        return TestServerIdentity(
            certificatePEM: try certificate.serializeAsPEM().pemString, privateKeyPEM: serverKey.pemRepresentation)
    }

    private static func ipAddressBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }
}

/// A server's certificate and key, PEM.
struct TestServerIdentity: Sendable {
    var certificatePEM: String
    var privateKeyPEM: String
}
