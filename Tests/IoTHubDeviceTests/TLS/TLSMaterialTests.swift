internal import COpenSSL
import Foundation
import IoTHubProtocol
import Logging
import Testing

@testable import IoTHubDevice

/// Certificates and keys of the sizes users have (RSA-2048 and 4096, encrypted keys, bundles,
/// the system's CA bundle) go through OpenSSL and libcurl whole. These tests also run against
/// the release build, where an earlier pointer that outlived its closure made certificates
/// over about a kilobyte unreadable (scripts/test).
@Suite(.serialized, .timeLimit(.minutes(5))) struct TLSMaterialTests {
    private func material() async throws -> RealWorldCertificates {
        try await RealWorldCertificates.shared()
    }

    private static func count(_ pem: String) -> Int {
        pem.components(separatedBy: "-----BEGIN CERTIFICATE-----").count - 1
    }

    @Test func readsEveryCertificateOfTheSystemBundle() async throws {
        let bundle = try await material().systemBundle
        #expect(bundle.utf8.count > 100_000, "the system CA bundle is missing (scripts/setup installs ca-certificates)")
        let certificates = try TLSContext.readCertificates(bundle, what: "server_verification_cert")
        defer { certificates.forEach { X509_free($0) } }
        #expect(certificates.count == Self.count(bundle))
    }

    @Test func readsRSACertificatesAndBundlesWhole() async throws {
        let material = try await material()
        let inputs = [
            ("RSA-4096 root", material.rootCA), ("RSA-2048 CA", material.deviceCA),
            ("three EC certificates", material.ecBundle),
            ("a chain", material.serverCertificate + material.rootCA),
            ("the system bundle and a private CA", material.systemBundle + material.deviceCA),
        ]
        for (name, pem) in inputs {
            let certificates = try TLSContext.readCertificates(pem, what: name)
            defer { certificates.forEach { X509_free($0) } }
            #expect(certificates.count == Self.count(pem), "\(name): \(pem.utf8.count) bytes")
        }
    }

    @Test func readsRSAKeysPlainTraditionalAndEncrypted() async throws {
        let material = try await material()
        let keys = [
            ("PKCS#8", material.deviceKeyPKCS8, nil), ("traditional RSA", material.deviceKeyTraditional, nil),
            ("encrypted PKCS#8", material.deviceKeyEncrypted, material.passPhrase),
        ]
        for (name, pem, passPhrase) in keys {
            let key = try TLSContext.readPrivateKey(pem, passPhrase: passPhrase)
            #expect(EVP_PKEY_get_bits(key) == 2048, "\(name)")
            EVP_PKEY_free(key)
        }
        #expect(throws: IoTHubError.self) {
            _ = try TLSContext.readPrivateKey(material.deviceKeyEncrypted, passPhrase: "wrong")
        }
        #expect(throws: IoTHubError.self) {
            _ = try TLSContext.readPrivateKey(material.deviceKeyEncrypted, passPhrase: nil)
        }
    }

    /// A device client with the RSA device certificate, reaching `port` on localhost directly.
    private func device(reaching port: Int, key: String, passPhrase: String?, trusting trusted: String) async throws
        -> IoTHubDeviceClient
    {
        let material = try await material()
        var logger = Logger(label: "tls-material-test")
        logger.logLevel = .error
        let configuration = DeviceClientConfiguration(
            serverVerificationCertificate: trusted, connectionRetry: false, mqttPort: port, httpsPort: port,
            operationTimeout: .seconds(10))
        return try IoTHubDeviceClient.fromX509Certificate(
            X509Credential(certificatePEM: material.deviceCertificate, privateKeyPEM: key, passPhrase: passPhrase),
            hostName: "localhost",
            deviceId: "dev1", configuration: configuration, logger: logger)
    }

    /// MQTT over TLS (OpenSSL through libmosquitto): an RSA-2048 server certificate under an
    /// RSA-4096 root given in a bundle with the system's CAs, an encrypted RSA-2048 device key.
    @Test(arguments: ["PKCS#8", "traditional", "encrypted"]) func connectsWithRSACertificatesAndKeys(keyKind: String)
        async throws
    {
        let material = try await material()
        let (key, passPhrase): (String, String?) =
            switch keyKind {
            case "PKCS#8": (material.deviceKeyPKCS8, nil)
            case "traditional": (material.deviceKeyTraditional, nil)
            default: (material.deviceKeyEncrypted, material.passPhrase)
            }
        let server = try await ClientCertificateServer.start(
            speaking: .mqtt, certificateChainPEM: material.serverCertificate, privateKeyPEM: material.serverKey,
            clientCA: material.deviceCA)
        let client = try await device(
            reaching: server.port, key: key, passPhrase: passPhrase, trusting: material.systemBundle + material.rootCA)
        var failure: IoTHubError?
        do {
            try await client.connect()
        } catch {
            failure = error
        }
        await client.shutdown()
        await server.stop()
        #expect(failure == nil, "\(String(describing: failure))")
        #expect(server.clientSubjects.first == "CN=dev1")
    }

    /// File upload's HTTPS (libcurl) with the same certificates and the encrypted key.
    @Test func fileUploadRequestsUseRSACertificatesAndAnEncryptedKey() async throws {
        let material = try await material()
        let server = try await ClientCertificateServer.start(
            speaking: .https, certificateChainPEM: material.serverCertificate, privateKeyPEM: material.serverKey,
            clientCA: material.deviceCA)
        let client = try await device(
            reaching: server.port, key: material.deviceKeyEncrypted, passPhrase: material.passPhrase,
            trusting: material.systemBundle + material.rootCA)
        let info = try await client.storageInfo(forBlob: "rsa.txt")
        await client.shutdown()
        await server.stop()
        #expect(info.correlationId == "c1")
        #expect(server.clientSubjects.first == "CN=dev1")
    }
}
