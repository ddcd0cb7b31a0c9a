import FoundationEssentials
import Glibc
import IoTHubProtocol
import NIOSSL

/// A directory only this user can enter (mode 0700), holding the tunnel's unix socket, so no
/// other local user can connect to the tunnel in libmosquitto's place. Removed with this object.
final class PrivateSocketDirectory: Sendable {
    let path: String

    /// The socket file inside the directory.
    var socketPath: String { path + "/mqtt.sock" }

    /// Creates `iothub-device-XXXXXX` under `$TMPDIR` (when its path is short enough for a unix
    /// socket address) or `/tmp`.
    init() throws(IoTHubError) {
        var base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        while base.count > 1, base.hasSuffix("/") { base.removeLast() }
        // sun_path holds 108 bytes: the template, "/mqtt.sock" and the terminator must fit.
        if base.utf8.count > 70 { base = "/tmp" }
        var template = Array((base + "/iothub-device-XXXXXX").utf8CString)
        let created = template.withUnsafeMutableBufferPointer { buffer in buffer.baseAddress.flatMap { mkdtemp($0) } }
        guard created != nil else {
            throw .clientError(
                "cannot create a private directory for the MQTT tunnel in \(base): \(String(cString: strerror(errno)))")
        }
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        chmod(path, 0o700)
    }

    deinit {
        unlink(socketPath)
        rmdir(path)
    }
}

extension NIOSSLContext {
    /// The ``TLSPolicy`` for the tunnel (NIOSSL): TLS 1.2 or newer, the cipher selection and the
    /// device's X.509 identity. The certificate check is not NIOSSL's: the tunnel's custom
    /// verification callback verifies the chain and the name with the policy's OpenSSL trust
    /// store (``TLSContext/rejectionReason(forServerChain:)``), so the trust roots set here
    /// decide nothing (NIOSSL's own check would also accept a certificate naming the
    /// connected IP address, which through a proxy is the proxy's).
    static func forTunnel(_ policy: TLSPolicy) throws(IoTHubError) -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        tls.certificateVerification = .noHostnameVerification
        do {
            if let pem = policy.extraTrustedCertificatesPEM {
                tls.additionalTrustRoots = [.certificates(try NIOSSLCertificate.fromPEMBytes(Array(pem.utf8)))]
            }
        } catch {
            throw .valueError(field: "server_verification_cert", reason: "holds no readable PEM certificate")
        }
        if let ciphers = policy.ciphers {
            if let tls12 = ciphers.tls12 {
                tls.cipherSuites = tls12
            } else {
                tls.minimumTLSVersion = .tlsv13
            }
            if !ciphers.allowsTLS13 {
                tls.maximumTLSVersion = .tlsv12
            } else if !CipherSelection.boringSSLTLS13Suites.isSubset(of: ciphers.tls13) {
                throw .valueError(
                    field: "cipher",
                    reason: "the WebSocket and proxy tunnel (BoringSSL) always offers all of "
                        + CipherSelection.boringSSLTLS13Suites.sorted().joined(separator: ", ")
                        + " for TLS 1.3: name all three, or no TLS 1.3 suite to stay at TLS 1.2")
            }
        }
        if let clientCertificate = policy.clientCertificate {
            do {
                tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(clientCertificate.certificatePEM.utf8))
                    .map { .certificate($0) }
            } catch {
                throw .valueError(field: "x509 certificate", reason: "holds no readable PEM certificate")
            }
            // A pass phrase callback is always given: without one BoringSSL would prompt on the
            // terminal for an encrypted key.
            let passPhrase = Array((clientCertificate.passPhrase ?? "").utf8)
            do {
                let key = try NIOSSLPrivateKey(bytes: Array(clientCertificate.privateKeyPEM.utf8), format: .pem) {
                    (setter: ([UInt8]) -> Void) in
                    setter(passPhrase)
                }
                tls.privateKey = .privateKey(key)
            } catch {
                throw .valueError(field: "x509 key", reason: "cannot be read (for the WebSocket or proxy tunnel)")
            }
        }
        do {
            return try NIOSSLContext(configuration: tls)
        } catch {
            throw .valueError(field: "cipher", reason: "the TLS settings were refused: \(error)")
        }
    }
}

extension TunnelPlan {
    /// The tunnel a client configured with `configuration` needs to reach `host`, or nil when
    /// libmosquitto goes straight over TCP (neither WebSockets nor a proxy). Shared by the device
    /// client and the provisioning client.
    static func forClient(
        configuration: DeviceClientConfiguration, host: String, policy: TLSPolicy, verifier: TLSContext
    ) throws(IoTHubError) -> TunnelPlan? {
        guard configuration.websockets || configuration.proxyOptions != nil else { return nil }
        return TunnelPlan(
            host: host, port: configuration.websockets ? configuration.httpsPort : configuration.mqttPort,
            webSocket: configuration.websockets,
            proxy: configuration.proxyOptions, tls: try NIOSSLContext.forTunnel(policy), verifier: verifier,
            userAgent: UserAgent.string + configuration.productInfo,
            timeout: min(configuration.operationTimeout, .seconds(30)))
    }
}
