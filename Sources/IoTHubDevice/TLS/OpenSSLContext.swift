internal import COpenSSL
import FoundationEssentials
import IoTHubProtocol
import NIOConcurrencyHelpers

/// The ``TLSPolicy`` as an OpenSSL `SSL_CTX`, for the MQTT connection libmosquitto makes itself
/// (MQTT straight over TLS). libmosquitto uses the context as it is.
///
/// `@unchecked Sendable` — why every use is safe:
/// - `pointer` (the `SSL_CTX`) is configured completely in `init` (protocol floor, trust
///   store, verification callback and its back pointer, read-ahead, cipher list, client
///   certificate) before the object is shared, and never changed afterwards. OpenSSL allows a
///   configured `SSL_CTX` to be used from many threads at once: libmosquitto creates its `SSL`
///   objects from it on the control queue and the network thread, and
///   ``rejectionReason(forServerChain:)`` reads its certificate store (which OpenSSL locks
///   itself) and verification parameters from the tunnel's event loop.
/// - The verification callback, on whatever thread a handshake runs, touches only
///   `lastRejection`, which is behind its lock; OpenSSL's error queue is per thread.
/// - `policy` is an immutable `Sendable` value.
/// - The context is freed only in `deinit`, when no one holds this object: libmosquitto's use
///   ends first because the ``MosquittoClient`` that gave it the context keeps this object
///   alive until it destroys its handle.
final class TLSContext: @unchecked Sendable {
    let pointer: OpaquePointer
    let policy: TLSPolicy
    /// The policy's certificate store, which this context verifies with and libcurl's contexts
    /// share (``HTTPSClient``).
    let trustStore: TrustStore
    /// OpenSSL's verification error for the last certificate a handshake with this context
    /// refused; libmosquitto frees its `SSL` object on a failed handshake, and with it the result.
    private let lastRejection = NIOLockedValueBox<Int?>(nil)

    init(policy: TLSPolicy) throws(IoTHubError) {
        trustStore = try TrustStore(policy: policy)
        guard let context = SSL_CTX_new(TLS_client_method()) else {
            throw .clientError("OpenSSL could not create a TLS context")
        }
        pointer = context
        self.policy = policy
        guard iothub_ssl_ctx_set_min_proto_version(context, TLS1_2_VERSION) == 1 else {
            throw .clientError("OpenSSL refused TLS 1.2 as the minimum version")
        }
        // The context finds this object in the verification callback (index 0 is the
        // application's; unretained: the object outlives the context it frees in deinit).
        SSL_CTX_set_ex_data(context, 0, Unmanaged.passUnretained(self).toOpaque())
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER) { accepted, store in
            guard accepted == 0, let store,
                let ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()),
                let owner = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(OpaquePointer(ssl)), 0)
            else { return accepted }
            let context = Unmanaged<TLSContext>.fromOpaque(owner).takeUnretainedValue()
            context.lastRejection.withLockedValue { $0 = Int(X509_STORE_CTX_get_error(store)) }
            return accepted
        }
        // One read takes every record that has arrived (MosquittoNetworkThread drains them).
        iothub_ssl_ctx_set_read_ahead(context, 1)
        guard trustStore.install(in: context) else {
            throw .clientError("OpenSSL could not share the certificate store")
        }
        guard let parameters = SSL_CTX_get0_param(context), policy.peer.configure(parameters) else {
            throw .valueError(field: "hostname", reason: "'\(policy.peer)' cannot be used for certificate verification")
        }
        if let ciphers = policy.ciphers {
            try Self.restrict(context, to: ciphers)
        }
        if let clientCertificate = policy.clientCertificate {
            try Self.useClientCertificate(clientCertificate, in: context)
        }
    }

    deinit {
        SSL_CTX_free(pointer)
    }

    /// Limits `context` to the suites of `ciphers`, and to the protocol versions they belong to.
    private static func restrict(_ context: OpaquePointer, to ciphers: CipherSelection) throws(IoTHubError) {
        if let tls12 = ciphers.tls12 {
            guard SSL_CTX_set_cipher_list(context, tls12) == 1 else {
                ERR_clear_error()
                throw .valueError(field: "cipher", reason: "OpenSSL knows none of the TLS 1.2 ciphers in '\(tls12)'")
            }
        } else {
            guard iothub_ssl_ctx_set_min_proto_version(context, TLS1_3_VERSION) == 1 else {
                throw .clientError("OpenSSL refused TLS 1.3 as the minimum version")
            }
        }
        if ciphers.allowsTLS13 {
            guard SSL_CTX_set_ciphersuites(context, ciphers.tls13List) == 1 else {
                ERR_clear_error()
                throw .valueError(field: "cipher", reason: "OpenSSL refused the TLS 1.3 suites '\(ciphers.tls13List)'")
            }
        } else {
            guard iothub_ssl_ctx_set_max_proto_version(context, TLS1_2_VERSION) == 1 else {
                throw .clientError("OpenSSL refused TLS 1.2 as the maximum version")
            }
        }
    }

    /// Forgets the last refused certificate: call before a handshake.
    func clearRejection() {
        lastRejection.withLockedValue { $0 = nil }
    }

    /// Why the last handshake with this context failed, as far as OpenSSL's verification can
    /// tell: the refused certificate's reason, or a general statement.
    func describeHandshakeFailure() -> String {
        guard let result = lastRejection.withLockedValue({ $0 }) else { return "the TLS handshake failed" }
        return
            "the hub's TLS certificate was not accepted: \(Self.describe(verificationResult: result, peer: policy.peer))"
    }

    /// Verifies a server's certificate chain (DER, leaf first, as the server sent it) exactly as
    /// a handshake with this context does: the same trust store, TLS-server purpose and peer
    /// name. Returns nil when it is accepted, else OpenSSL's reason ("certificate has
    /// expired", "hostname mismatch", …). For TLS stacks other than OpenSSL (the tunnel's).
    func rejectionReason(forServerChain chain: [[UInt8]]) -> String? {
        let certificates = chain.compactMap { der -> OpaquePointer? in
            der.withUnsafeBufferPointer { buffer in
                var cursor = buffer.baseAddress
                // d2i_X509 copies what it parses: nothing keeps `buffer` after the call.
                return d2i_X509(nil, &cursor, buffer.count)
            }
        }
        guard certificates.count == chain.count, let leaf = certificates.first else {
            certificates.forEach { X509_free($0) }
            return "the server sent no certificate OpenSSL can read"
        }
        guard let intermediates = iothub_sk_x509_new_null() else {
            certificates.forEach { X509_free($0) }
            return "OpenSSL could not allocate a certificate list"
        }
        // The list owns every certificate but the leaf from here on.
        for certificate in certificates.dropFirst() where iothub_sk_x509_push(intermediates, certificate) == 0 {
            X509_free(certificate)
        }
        defer {
            iothub_sk_x509_pop_free(intermediates)
            X509_free(leaf)
        }
        guard let verification = X509_STORE_CTX_new() else { return "OpenSSL could not allocate a verification" }
        defer { X509_STORE_CTX_free(verification) }
        guard X509_STORE_CTX_init(verification, SSL_CTX_get_cert_store(pointer), leaf, intermediates) == 1,
            X509_STORE_CTX_set_default(verification, "ssl_server") == 1,
            X509_VERIFY_PARAM_set1(X509_STORE_CTX_get0_param(verification), SSL_CTX_get0_param(pointer)) == 1
        else {
            ERR_clear_error()
            return "OpenSSL could not set up the verification"
        }
        guard X509_verify_cert(verification) != 1 else { return nil }
        ERR_clear_error()
        return Self.describe(verificationResult: Int(X509_STORE_CTX_get_error(verification)), peer: policy.peer)
    }

    /// OpenSSL's text for a verification result, naming the expected peer on a name mismatch.
    static func describe(verificationResult result: Int, peer: PeerName) -> String {
        let text = X509_verify_cert_error_string(result).map { String(cString: $0) } ?? "verification error \(result)"
        switch Int32(result) {
        case X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH: return "\(text): it is not valid for \(peer)"
        default: return text
        }
    }

    /// Every certificate in a PEM text (a CA bundle may hold hundreds). The caller frees them.
    static func readCertificates(_ pem: String, what: String) throws(IoTHubError) -> [OpaquePointer] {
        let certificates = try withMemoryBIO(holding: pem, secret: false) { bio -> [OpaquePointer] in
            var certificates: [OpaquePointer] = []
            while let certificate = PEM_read_bio_X509(bio, nil, nil, nil) {
                certificates.append(certificate)
            }
            // The read that ends the loop leaves "no start line" on the error queue.
            ERR_clear_error()
            return certificates
        }
        guard !certificates.isEmpty else {
            throw .valueError(field: what, reason: "holds no PEM certificate")
        }
        return certificates
    }

    private static func useClientCertificate(_ credential: X509Credential, in context: OpaquePointer)
        throws(IoTHubError)
    {
        let certificates = try readCertificates(credential.certificatePEM, what: "x509 certificate")
        defer { certificates.forEach { X509_free($0) } }
        guard SSL_CTX_use_certificate(context, certificates[0]) == 1 else {
            ERR_clear_error()
            throw .valueError(field: "x509 certificate", reason: "OpenSSL refused the certificate")
        }
        for intermediate in certificates.dropFirst() {
            // The context takes ownership of chain certificates it is given; hand it a copy.
            X509_up_ref(intermediate)
            if iothub_ssl_ctx_add0_chain_cert(context, intermediate) != 1 { X509_free(intermediate) }
        }
        let key = try readPrivateKey(credential.privateKeyPEM, passPhrase: credential.passPhrase)
        defer { EVP_PKEY_free(key) }
        guard SSL_CTX_use_PrivateKey(context, key) == 1, SSL_CTX_check_private_key(context) == 1 else {
            ERR_clear_error()
            throw .valueError(field: "x509 key", reason: "the private key does not match the certificate")
        }
    }

    /// The private key in a PEM text (PKCS#8, traditional RSA/EC, encrypted or not). The caller
    /// frees it.
    static func readPrivateKey(_ pem: String, passPhrase: String?) throws(IoTHubError) -> OpaquePointer {
        let key = try withMemoryBIO(holding: pem, secret: true) { bio -> OpaquePointer? in
            // An empty pass phrase makes OpenSSL fail on an encrypted key instead of prompting on
            // the terminal. The phrase is passed as the callback's user data, which OpenSSL's
            // default callback copies from; the C string lives for the whole call.
            (passPhrase ?? "").withCString { phrase in
                PEM_read_bio_PrivateKey(bio, nil, nil, UnsafeMutableRawPointer(mutating: phrase))
            }
        }
        guard let key else {
            ERR_clear_error()
            throw .valueError(
                field: "x509 key",
                reason: passPhrase == nil
                    ? "is not a PEM private key (or it needs a pass phrase)" : "cannot be read with this pass phrase")
        }
        return key
    }

    /// Runs `body` with an OpenSSL memory BIO that holds its own copy of `text`. No pointer
    /// into Swift memory is kept by OpenSSL (`BIO_new_mem_buf` would keep one past the closure
    /// that made it valid). A `secret` text goes into secure memory, cleared when freed.
    private static func withMemoryBIO<T>(
        holding text: String, secret: Bool, _ body: (OpaquePointer) throws(IoTHubError) -> T
    ) throws(IoTHubError) -> T {
        guard let bio = BIO_new(secret ? BIO_s_secmem() : BIO_s_mem()) else {
            throw .clientError("OpenSSL could not allocate a buffer")
        }
        defer { BIO_free(bio) }
        let bytes = Array(text.utf8)
        if !bytes.isEmpty {
            let written = bytes.withUnsafeBytes { BIO_write(bio, $0.baseAddress, Int32(clamping: $0.count)) }
            guard written == bytes.count else {
                throw .clientError("OpenSSL could not buffer \(bytes.count) bytes of PEM text")
            }
        }
        return try body(bio)
    }
}

extension TLSPolicy {
    /// The CAs this policy trusts, as an OpenSSL certificate store: the system's (OpenSSL's
    /// default file and directory, which `SSL_CERT_FILE` and `SSL_CERT_DIR` move) when
    /// ``trustsSystemCertificates``, and ``extraTrustedCertificatesPEM``. Every TLS stack of
    /// the client verifies with such a store: libmosquitto's context (``TLSContext``), the
    /// tunnel (through ``TLSContext/rejectionReason(forServerChain:)``) and libcurl (set on its
    /// context before each handshake, ``HTTPSClient``), all sharing one (``TrustStore``). The
    /// caller owns the store.
    func makeTrustStore() throws(IoTHubError) -> OpaquePointer {
        let certificates =
            try extraTrustedCertificatesPEM.map { pem throws(IoTHubError) in
                try TLSContext.readCertificates(pem, what: "server_verification_cert")
            } ?? []
        defer { certificates.forEach { X509_free($0) } }
        guard let store = X509_STORE_new() else { throw .clientError("OpenSSL could not create a certificate store") }
        // A missing system location only means fewer trusted CAs.
        if trustsSystemCertificates, X509_STORE_set_default_paths(store) != 1 { ERR_clear_error() }
        for certificate in certificates where X509_STORE_add_cert(store, certificate) != 1 {
            // The same CA twice (in the file and the system's) is no error.
            ERR_clear_error()
        }
        return store
    }
}

/// An X.509 identity: certificate (with its chain) and private key, PEM, optionally encrypted.
public struct X509Credential: Sendable, Hashable {
    public var certificatePEM: String
    public var privateKeyPEM: String
    public var passPhrase: String?

    public init(certificatePEM: String, privateKeyPEM: String, passPhrase: String? = nil) {
        self.certificatePEM = certificatePEM
        self.privateKeyPEM = privateKeyPEM
        self.passPhrase = passPhrase
    }
}
