internal import COpenSSL
import IoTHubProtocol

/// The certificate store of a ``TLSPolicy`` (``TLSPolicy/makeTrustStore()``), made once per
/// client and shared by reference count with every OpenSSL context that verifies with it:
/// libmosquitto's (``TLSContext``) and libcurl's, one per HTTPS transfer. Reading the system's
/// CA bundle (well over a hundred certificates) once instead of at each handshake.
///
/// `@unchecked Sendable` — why every use is safe: `pointer` is set in `init` and never
/// changed; OpenSSL guards an `X509_STORE`'s contents (lookups, the certificates its directory
/// lookup loads on demand) with the store's own lock and counts its references atomically, so
/// contexts on any thread may verify with it and take references at once; this object's
/// reference is dropped only in `deinit`, when no one holds it.
final class TrustStore: @unchecked Sendable {
    private let pointer: OpaquePointer

    init(policy: TLSPolicy) throws(IoTHubError) {
        pointer = try policy.makeTrustStore()
    }

    deinit {
        X509_STORE_free(pointer)
    }

    /// Makes the OpenSSL `SSL_CTX` `context` verify with this store; the context takes a
    /// reference of its own (and frees the store it had). False when OpenSSL refuses the reference.
    func install(in context: OpaquePointer) -> Bool {
        guard X509_STORE_up_ref(pointer) == 1 else { return false }
        SSL_CTX_set_cert_store(context, pointer)
        return true
    }
}
