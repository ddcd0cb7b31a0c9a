internal import CCurl
import Dispatch
import FoundationEssentials
import Glibc
import IoTHubProtocol

/// Outbound HTTPS with libcurl, for the hub's file-upload endpoints and blob storage: the
/// client's ``TLSPolicy`` (TLS 1.2 or newer, its trust store set on libcurl's OpenSSL context
/// before each handshake, the cipher list, the X.509 client identity of the device), with the
/// certificate checked against the host of each URL, never against the address connected to
/// (a proxy's). Each transfer runs on a private queue (libcurl's easy interface blocks), never
/// on Swift's cooperative pool.
struct HTTPSClient: Sendable {
    struct Response: Sendable {
        var status: Int
        var body: Data
        /// The `Retry-After` header in seconds, when the server sent one.
        var retryAfterSeconds: Int? = nil
    }

    /// Trust, cipher list and client certificate; its `peer` is not used: each URL names its
    /// own host (the hub's, or blob storage's).
    var policy: TLSPolicy
    /// The policy's certificate store, made once by the client and set on libcurl's OpenSSL
    /// context before each handshake.
    var trustStore: TrustStore
    /// Every request goes through this proxy; without one, no proxy is used (not even one named
    /// by `https_proxy` in the environment: the client's configuration decides).
    var proxy: ProxyOptions?
    var timeoutSeconds: Int = 60
    /// A unix socket every request goes through instead of TCP (the IoT Edge workload API,
    /// `unix://…`); the URL still names the request's host and path.
    var unixSocketPath: String? = nil

    private static let queue = DispatchQueue(label: "iothub-sidecar.https", attributes: .concurrent)
    private static let globalInit: Bool = {
        curl_global_init(Int(CURL_GLOBAL_DEFAULT))
        return true
    }()

    /// Sends a request and returns the status and body.
    func send(method: String, url: String, headers: [String: String], body: Data?) async throws(IoTHubError) -> Response
    {
        _ = Self.globalInit
        let result: Result<Response, IoTHubError> = await withCheckedContinuation { continuation in
            Self.queue.async {
                continuation.resume(returning: perform(method: method, url: url, headers: headers, body: body))
            }
        }
        return try result.get()
    }

    /// Sends a request whose body of `length` bytes arrives in pieces while it is sent: the
    /// body is never held whole in memory. A body that throws aborts the transfer.
    func send<Body: AsyncSequence>(
        method: String, url: String, headers: [String: String], length: Int, streaming body: Body
    ) async throws(IoTHubError) -> Response where Body.Element == Data {
        _ = Self.globalInit
        let pipe = UploadPipe()
        let (results, resultContinuation) = AsyncStream.makeStream(of: Result<Response, IoTHubError>.self)
        Self.queue.async {
            let result = perform(method: method, url: url, headers: headers, body: nil, streaming: (pipe, length))
            pipe.closeReadingEnd()
            resultContinuation.yield(result)
            resultContinuation.finish()
        }
        var bodyError: (any Error)?
        do {
            for try await chunk in body where !chunk.isEmpty {
                guard await pipe.write(chunk) else { break }
            }
            pipe.finishWriting()
        } catch {
            bodyError = error
            pipe.abort()
        }
        var result: Result<Response, IoTHubError> = .failure(.clientError("the upload did not finish"))
        for await outcome in results { result = outcome }
        if bodyError != nil { throw .operationCancelled("the request body broke off; the upload was aborted") }
        return try result.get()
    }

    /// Accumulates the response body (libcurl's write callback target).
    private final class Sink {
        var data = Data()
        var upload: Data
        var uploadOffset = 0
        var pipe: UploadPipe?
        /// The store the handshake verifies with (libcurl's TLS context callback).
        let trustStore: TrustStore

        init(upload: Data, pipe: UploadPipe?, trustStore: TrustStore) {
            self.upload = upload
            self.pipe = pipe
            self.trustStore = trustStore
        }
    }

    /// Sets the protocol versions (TLS 1.2 or newer) and, when the policy names them, the suites
    /// of ``CipherSelection`` on a transfer; the failure when libcurl refuses them.
    private static func restrict(_ handle: UnsafeMutableRawPointer, to ciphers: CipherSelection?) -> IoTHubError? {
        var versions = Int(CURL_SSLVERSION_TLSv1_2)
        if let ciphers {
            if !ciphers.allowsTLS12 { versions = Int(CURL_SSLVERSION_TLSv1_3) }
            if !ciphers.allowsTLS13 { versions |= Int(CURL_SSLVERSION_MAX_TLSv1_2) }
            if let tls12 = ciphers.tls12, iothub_curl_setopt_string(handle, CURLOPT_SSL_CIPHER_LIST, tls12) != CURLE_OK
            {
                return .valueError(field: "cipher", reason: "libcurl refused the TLS 1.2 ciphers '\(tls12)'")
            }
            if ciphers.allowsTLS13,
                iothub_curl_setopt_string(handle, CURLOPT_TLS13_CIPHERS, ciphers.tls13List) != CURLE_OK
            {
                return .valueError(field: "cipher", reason: "libcurl refused the TLS 1.3 suites '\(ciphers.tls13List)'")
            }
        }
        guard iothub_curl_setopt_long(handle, CURLOPT_SSLVERSION, versions) == CURLE_OK else {
            return .clientError("libcurl refused TLS 1.2 or newer as its protocol versions")
        }
        return nil
    }

    private func perform(
        method: String, url: String, headers: [String: String], body: Data?,
        streaming: (pipe: UploadPipe, length: Int)? = nil
    ) -> Result<Response, IoTHubError> {
        guard let handle = curl_easy_init() else {
            return .failure(.clientError("libcurl could not create a transfer"))
        }
        defer { curl_easy_cleanup(handle) }
        let sink = Sink(upload: body ?? Data(), pipe: streaming?.pipe, trustStore: trustStore)
        let sinkPointer = Unmanaged.passUnretained(sink).toOpaque()
        var headerList: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(headerList) }
        for (name, value) in headers {
            headerList = curl_slist_append(headerList, "\(name): \(value)")
        }
        if body != nil || streaming != nil { headerList = curl_slist_append(headerList, "Expect:") }

        _ = iothub_curl_setopt_string(handle, CURLOPT_URL, url)
        _ = iothub_curl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, method)
        _ = iothub_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
        _ = iothub_curl_setopt_long(handle, CURLOPT_TIMEOUT, timeoutSeconds)
        _ = iothub_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT, 30)
        _ = iothub_curl_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, 1)
        _ = iothub_curl_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, 2)
        if let failure = Self.restrict(handle, to: policy.ciphers) { return .failure(failure) }
        // Trust is the policy's store alone (docs/ARCHITECTURE.md, "TLS"): libcurl loads no CA
        // file or directory of its own, and the store is set on its OpenSSL context before the
        // handshake.
        _ = iothub_curl_setopt_string(handle, CURLOPT_CAINFO, nil)
        _ = iothub_curl_setopt_string(handle, CURLOPT_CAPATH, nil)
        _ = iothub_curl_setopt_pointer(handle, CURLOPT_SSL_CTX_DATA, sinkPointer)
        let trustInstalled = iothub_curl_setopt_ssl_ctx_function(handle) { _, sslContext, context in
            guard let sslContext, let context else { return CURLE_SSL_CERTPROBLEM }
            let sink = Unmanaged<Sink>.fromOpaque(context).takeUnretainedValue()
            return sink.trustStore.install(in: OpaquePointer(sslContext)) ? CURLE_OK : CURLE_SSL_CACERT_BADFILE
        }
        guard trustInstalled == CURLE_OK else {
            return .failure(.clientError("libcurl cannot use the client's trust store: it is not built with OpenSSL"))
        }
        _ = iothub_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList)
        if let proxy {
            // socks5h: the proxy resolves the host name, as on the MQTT path.
            let scheme =
                switch proxy.kind {
                case .http: "http"
                case .socks4: "socks4"
                case .socks5: "socks5h"
                }
            _ = iothub_curl_setopt_string(
                handle, CURLOPT_PROXY, "\(scheme)://\(hostAndPort(proxy.address, proxy.port))")
            _ = iothub_curl_setopt_string(handle, CURLOPT_NOPROXY, "")
            if let username = proxy.username { _ = iothub_curl_setopt_string(handle, CURLOPT_PROXYUSERNAME, username) }
            if let password = proxy.password { _ = iothub_curl_setopt_string(handle, CURLOPT_PROXYPASSWORD, password) }
        } else {
            _ = iothub_curl_setopt_string(handle, CURLOPT_PROXY, "")
        }
        if let unixSocketPath { _ = iothub_curl_setopt_string(handle, CURLOPT_UNIX_SOCKET_PATH, unixSocketPath) }
        _ = iothub_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, sinkPointer)
        _ = iothub_curl_setopt_write_function(handle) { pointer, size, count, context in
            guard let pointer, let context else { return 0 }
            let sink = Unmanaged<Sink>.fromOpaque(context).takeUnretainedValue()
            sink.data.append(UnsafeRawPointer(pointer).assumingMemoryBound(to: UInt8.self), count: size * count)
            return size * count
        }
        if let streaming {
            _ = iothub_curl_setopt_long(handle, CURLOPT_UPLOAD, 1)
            _ = iothub_curl_setopt_long(handle, CURLOPT_INFILESIZE_LARGE, streaming.length)
            _ = iothub_curl_setopt_pointer(handle, CURLOPT_READDATA, sinkPointer)
            _ = iothub_curl_setopt_read_function(handle) { buffer, size, count, context in
                guard let buffer, let context else { return 0 }
                let sink = Unmanaged<Sink>.fromOpaque(context).takeUnretainedValue()
                guard let pipe = sink.pipe else { return 0 }
                // Blocks this transfer's own thread (never a Swift task) until bytes arrive.
                return pipe.read(into: UnsafeMutableRawBufferPointer(start: buffer, count: size * count))
                    ?? Int(CURL_READFUNC_ABORT)
            }
        } else if let body {
            _ = iothub_curl_setopt_long(handle, CURLOPT_UPLOAD, method == "PUT" ? 1 : 0)
            _ = iothub_curl_setopt_long(handle, CURLOPT_POST, method == "PUT" ? 0 : 1)
            _ = iothub_curl_setopt_long(
                handle, method == "PUT" ? CURLOPT_INFILESIZE_LARGE : CURLOPT_POSTFIELDSIZE_LARGE, body.count)
            _ = iothub_curl_setopt_pointer(handle, CURLOPT_READDATA, sinkPointer)
            _ = iothub_curl_setopt_read_function(handle) { buffer, size, count, context in
                guard let buffer, let context else { return 0 }
                let sink = Unmanaged<Sink>.fromOpaque(context).takeUnretainedValue()
                let length = min(size * count, sink.upload.count - sink.uploadOffset)
                sink.upload.withUnsafeBytes { bytes in
                    if let base = bytes.baseAddress, length > 0 {
                        memcpy(buffer, base + sink.uploadOffset, length)
                    }
                }
                sink.uploadOffset += length
                return length
            }
        }
        // libcurl's own explanation, which names the step that failed (e.g. the proxy's answer).
        let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        defer { errorBuffer.deallocate() }
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        _ = iothub_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer)
        // libcurl copies the PEM blobs (CURL_BLOB_COPY) when they are set.
        let clientCertificate = policy.clientCertificate
        // libcurl holds `sink` unretained (write and read callbacks): it lives until the
        // transfer is over, whatever the optimiser makes of its last use.
        let result: CURLcode = withExtendedLifetime(sink) {
            withBlobs(
                certificate: clientCertificate.map { Data($0.certificatePEM.utf8) },
                key: clientCertificate.map { Data($0.privateKeyPEM.utf8) }, handle: handle)
        }
        guard result == CURLE_OK else {
            let detail = String(cString: errorBuffer)
            var message = detail.isEmpty ? String(cString: curl_easy_strerror(result)) : detail
            if let proxy { message += " (through the \(proxy.name))" }
            switch result {
            case CURLE_RECV_ERROR where proxy != nil:
                // A proxy that closes the tunnel: the hub was not reached.
                return .failure(.connectionFailedError("\(url.split(separator: "?").first ?? ""): \(message)"))
            case CURLE_COULDNT_RESOLVE_PROXY, CURLE_PROXY, CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST,
                CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION:
                return .failure(.connectionFailedError("\(url.split(separator: "?").first ?? ""): \(message)"))
            case CURLE_ABORTED_BY_CALLBACK:
                return .failure(.operationCancelled("the upload was aborted"))
            case CURLE_OPERATION_TIMEDOUT:
                return .failure(.operationTimeout("\(url.split(separator: "?").first ?? ""): \(message)"))
            default:
                return .failure(.clientError("HTTPS request failed: \(message)"))
            }
        }
        var status = 0
        _ = iothub_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        var retryAfter: UnsafeMutablePointer<curl_header>?
        var retryAfterSeconds: Int?
        if curl_easy_header(handle, "Retry-After", 0, UInt32(CURLH_HEADER), -1, &retryAfter) == CURLHE_OK,
            let value = retryAfter?.pointee.value
        {
            // Delay-seconds only (an HTTP date is not used): one number, blanks around it allowed.
            let words = String(cString: value).split(whereSeparator: \.isWhitespace)
            retryAfterSeconds = words.count == 1 ? Int(words[0]) : nil
        }
        return .success(Response(status: status, body: sink.data, retryAfterSeconds: retryAfterSeconds))
    }

    private func withBlobs(certificate: Data?, key: Data?, handle: UnsafeMutableRawPointer) -> CURLcode {
        func with(_ data: Data?, _ option: CURLoption, _ body: () -> CURLcode) -> CURLcode {
            guard var data else { return body() }
            return data.withUnsafeMutableBytes { bytes in
                var blob = curl_blob(data: bytes.baseAddress, len: bytes.count, flags: UInt32(CURL_BLOB_COPY))
                _ = iothub_curl_setopt_blob(handle, option, &blob)
                return body()
            }
        }
        if let passPhrase = policy.clientCertificate?.passPhrase {
            _ = iothub_curl_setopt_string(handle, CURLOPT_KEYPASSWD, passPhrase)
        }
        return with(certificate, CURLOPT_SSLCERT_BLOB) {
            with(key, CURLOPT_SSLKEY_BLOB) {
                curl_easy_perform(handle)
            }
        }
    }
}
