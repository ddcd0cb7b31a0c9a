internal import COpenSSL
import Foundation
import IoTHubProtocol

/// An OpenSSL `SSL_CTX` for the MQTT connection: TLS 1.2 or newer, the server's certificate
/// checked against the trusted CAs and the host name, optional cipher list and client
/// certificate. libmosquitto uses it as it is.
///
/// `@unchecked Sendable`: the context is configured completely in `init` and never changed
/// afterwards; OpenSSL allows one `SSL_CTX` to create `SSL` objects on any thread once
/// configured, and the pointer is freed only in `deinit`, when no one else holds it.
final class TLSContext: @unchecked Sendable {
    let pointer: OpaquePointer

    /// - Parameters:
    ///   - host: The name the server's certificate must match (the gateway's, if there is one).
    ///   - trustedCertificatesPEM: Extra CAs to trust (the seed's `server_verification_cert`),
    ///     on top of the system's.
    ///   - cipherList: OpenSSL cipher list for TLS 1.2.
    ///   - clientCertificate: Certificate and key for X.509 identities.
    init(host: String, trustedCertificatesPEM: String?, cipherList: String?, clientCertificate: X509Credential?) throws(IoTHubError) {
        guard let context = SSL_CTX_new(TLS_client_method()) else {
            throw .clientError("OpenSSL could not create a TLS context")
        }
        pointer = context
        guard iothub_ssl_ctx_set_min_proto_version(context, TLS1_2_VERSION) == 1 else {
            throw .clientError("OpenSSL refused TLS 1.2 as the minimum version")
        }
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
        // One read takes every record that has arrived (MosquittoNetworkThread drains them).
        iothub_ssl_ctx_set_read_ahead(context, 1)
        if SSL_CTX_set_default_verify_paths(context) != 1 { ERR_clear_error() }
        if let trustedCertificatesPEM, !trustedCertificatesPEM.isEmpty {
            let certificates = try Self.readCertificates(trustedCertificatesPEM, what: "server_verification_cert")
            let store = SSL_CTX_get_cert_store(context)
            for certificate in certificates {
                X509_STORE_add_cert(store, certificate)
                X509_free(certificate)
            }
        }
        guard let parameters = SSL_CTX_get0_param(context), X509_VERIFY_PARAM_set1_host(parameters, host, 0) == 1 else {
            throw .valueError(field: "hostname", reason: "'\(host)' cannot be used for certificate verification")
        }
        if let cipherList, !cipherList.isEmpty {
            guard SSL_CTX_set_cipher_list(context, cipherList) == 1 else {
                ERR_clear_error()
                throw .valueError(field: "cipher", reason: "OpenSSL knows none of the ciphers in '\(cipherList)'")
            }
        }
        if let clientCertificate {
            try Self.useClientCertificate(clientCertificate, in: context)
        }
    }

    deinit {
        SSL_CTX_free(pointer)
    }

    /// Every certificate in a PEM text.
    static func readCertificates(_ pem: String, what: String) throws(IoTHubError) -> [OpaquePointer] {
        let bytes = Array(pem.utf8)
        guard let bio = bytes.withUnsafeBytes({ BIO_new_mem_buf($0.baseAddress, Int32($0.count)) }) else {
            throw .clientError("OpenSSL could not read \(what)")
        }
        defer { BIO_free(bio) }
        var certificates: [OpaquePointer] = []
        while let certificate = PEM_read_bio_X509(bio, nil, nil, nil) {
            certificates.append(certificate)
        }
        ERR_clear_error()
        guard !certificates.isEmpty else {
            throw .valueError(field: what, reason: "holds no PEM certificate")
        }
        return certificates
    }

    private static func useClientCertificate(_ credential: X509Credential, in context: OpaquePointer) throws(IoTHubError) {
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

    static func readPrivateKey(_ pem: String, passPhrase: String?) throws(IoTHubError) -> OpaquePointer {
        let bytes = Array(pem.utf8)
        guard let bio = bytes.withUnsafeBytes({ BIO_new_mem_buf($0.baseAddress, Int32($0.count)) }) else {
            throw .clientError("OpenSSL could not read the private key")
        }
        defer { BIO_free(bio) }
        let key: OpaquePointer?
        if let passPhrase {
            key = passPhrase.withCString { phrase in
                PEM_read_bio_PrivateKey(bio, nil, nil, UnsafeMutableRawPointer(mutating: phrase))
            }
        } else {
            // An empty pass phrase makes OpenSSL fail on an encrypted key instead of prompting.
            key = "".withCString { PEM_read_bio_PrivateKey(bio, nil, nil, UnsafeMutableRawPointer(mutating: $0)) }
        }
        guard let key else {
            ERR_clear_error()
            throw .valueError(field: "x509 key", reason: passPhrase == nil ? "is not a PEM private key (or it needs a pass phrase)" : "cannot be read with this pass phrase")
        }
        return key
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
