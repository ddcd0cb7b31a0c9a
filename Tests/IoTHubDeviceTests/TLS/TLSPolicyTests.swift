internal import COpenSSL
import Foundation
import IoTHubProtocol
import Testing

@testable import IoTHubDevice

/// Whom the client trusts: `server_verification_cert` replaces the system's CAs, as in the
/// Python SDK, unless the configuration asks to add it to them. The one trust store is what
/// every TLS stack verifies with (the end-to-end proof on all three stacks, with the system's
/// CAs moved by SSL_CERT_FILE, is Tests/python/test_sidecar_trust.py).
@Suite struct TLSPolicyTests {
    private static func policy(ca: String?, addsToSystemStore: Bool = false) throws -> TLSPolicy {
        try TLSPolicy(
            configuration: DeviceClientConfiguration(
                serverVerificationCertificate: ca, serverVerificationCertificateAddsToSystemStore: addsToSystemStore),
            hostName: "myhub.azure-devices.net", clientCertificate: nil)
    }

    /// The number of certificates a trust store holds.
    private static func certificateCount(_ policy: TLSPolicy) throws -> Int {
        let store = try policy.makeTrustStore()
        defer { X509_STORE_free(store) }
        return Int(OPENSSL_sk_num(X509_STORE_get0_objects(store)))
    }

    @Test func theSystemsCAsAreTrustedOnlyWithoutACertificateOrWhenAskedToAdd() throws {
        #expect(try Self.policy(ca: nil).trustsSystemCertificates)
        #expect(try Self.policy(ca: "").trustsSystemCertificates, "an empty certificate is none")
        #expect(try !Self.policy(ca: "PEM").trustsSystemCertificates)
        #expect(try Self.policy(ca: "PEM", addsToSystemStore: true).trustsSystemCertificates)
    }

    @Test func theTrustStoreHoldsTheGivenCAAloneUnlessAskedToAddTheSystems() throws {
        let ca = try TestCertificateAuthority().pem
        let system = try Self.certificateCount(Self.policy(ca: nil))
        #expect(system > 100, "the system's CA bundle is missing (scripts/setup installs ca-certificates)")
        #expect(try Self.certificateCount(Self.policy(ca: ca)) == 1)
        #expect(try Self.certificateCount(Self.policy(ca: ca, addsToSystemStore: true)) == system + 1)
    }

    @Test func anUnreadableCertificateIsAValueError() {
        #expect {
            _ = try Self.policy(ca: "not PEM").makeTrustStore()
        } throws: { error in
            (error as? IoTHubError)?.code == "ValueError"
        }
    }
}
