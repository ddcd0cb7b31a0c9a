import Crypto
import Foundation
import SwiftASN1
import X509

/// The hub's own small certificate authority: a CA certificate that devices and SDKs trust
/// (`ca.pem`), and the server certificate every LocalHub listener presents, issued by it for
/// `localhost`, `127.0.0.1`, `::1` and the hub's host name.
struct CertificateAuthority: Sendable {
    /// PEM text of the CA certificate.
    var caCertificatePEM: String
    /// PEM text of the server certificate.
    var serverCertificatePEM: String
    /// PEM text (PKCS#8) of the server certificate's private key.
    var serverPrivateKeyPEM: String

    /// Creates a new CA and a server certificate for `hostNames`.
    static func generate(hostNames: [String], now: Date = Date()) throws -> CertificateAuthority {
        let caKey = P256.Signing.PrivateKey()
        let caName = try DistinguishedName {
            OrganizationName("iothub-sidecar")
            CommonName("iothub-sidecar LocalHub CA")
        }
        let caCertificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: Certificate.PrivateKey(caKey).publicKey,
            notValidBefore: now.addingTimeInterval(-3600),
            notValidAfter: now.addingTimeInterval(20 * 365 * 86_400),
            issuer: caName,
            subject: caName,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: Certificate.PrivateKey(caKey).publicKey)
            },
            issuerPrivateKey: Certificate.PrivateKey(caKey))

        let serverKey = P256.Signing.PrivateKey()
        var names: [GeneralName] = []
        for host in Set(hostNames + ["localhost"]).sorted() {
            names.append(.dnsName(host))
        }
        names.append(.ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])))
        names.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice([UInt8](repeating: 0, count: 15) + [1]))))
        let serverCertificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: Certificate.PrivateKey(serverKey).publicKey,
            notValidBefore: now.addingTimeInterval(-3600),
            notValidAfter: now.addingTimeInterval(5 * 365 * 86_400),
            issuer: caName,
            subject: try DistinguishedName { CommonName(hostNames.first ?? "localhost") },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyAgreement: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(names)
                SubjectKeyIdentifier(hash: Certificate.PrivateKey(serverKey).publicKey)
                AuthorityKeyIdentifier(
                    keyIdentifier: SubjectKeyIdentifier(hash: Certificate.PrivateKey(caKey).publicKey).keyIdentifier)
            },
            issuerPrivateKey: Certificate.PrivateKey(caKey))

        return CertificateAuthority(
            caCertificatePEM: try caCertificate.serializeAsPEM().pemString,
            serverCertificatePEM: try serverCertificate.serializeAsPEM().pemString,
            serverPrivateKeyPEM: serverKey.pemRepresentation)
    }

    /// Whether the server certificate names `hostName` (so a changed `--hostname` gets a new one).
    func serverCertificateCovers(_ hostName: String) -> Bool {
        guard let certificate = try? Certificate(pemEncoded: serverCertificatePEM),
            let names = try? certificate.extensions.subjectAlternativeNames
        else { return false }
        return names.contains { name in
            if case .dnsName(let dnsName) = name { return dnsName.lowercased() == hostName.lowercased() }
            return false
        }
    }
}

/// Thumbprints of a DER certificate as IoT Hub compares them: SHA-1 and SHA-256, upper-case hex.
enum CertificateThumbprint {
    static func sha1(_ der: some DataProtocol) -> String {
        hex(Insecure.SHA1.hash(data: der))
    }

    static func sha256(_ der: some DataProtocol) -> String {
        hex(SHA256.hash(data: der))
    }

    private static func hex(_ digest: some Sequence<UInt8>) -> String {
        digest.map { byte in
            let digits = Array("0123456789ABCDEF".utf8)
            return String(decoding: [digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]], as: UTF8.self)
        }.joined()
    }
}
