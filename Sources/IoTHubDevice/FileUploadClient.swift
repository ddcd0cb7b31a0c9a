import FoundationEssentials
import IoTHubProtocol
import Logging

/// The hub's file-upload endpoints and blob storage, over HTTPS: the device's side of
/// `get_storage_info_for_blob`, `notify_blob_upload_status` and the one-call upload. It needs
/// only the identity, the current credential and the configuration — no MQTT connection.
struct FileUploadClient: Sendable {
    let credentials: CredentialStore
    let configuration: DeviceClientConfiguration
    /// The client's TLS policy (trust, cipher list); the client certificate is chosen per host.
    let tlsPolicy: TLSPolicy
    /// The policy's certificate store, shared with the MQTT connection's context.
    let trustStore: TrustStore
    let logger: Logger

    private var hostName: String { credentials.hostName }
    private var deviceId: String { credentials.deviceId }

    /// Asks the hub where to upload a file. A name blob storage would not read as written
    /// (``BlobName/validate(_:)``) is refused first.
    func storageInfo(forBlob blobName: String) async throws(IoTHubError) -> StorageInfo {
        try BlobName.validate(blobName)
        let body = JSONValue.object(["blobName": .string(blobName)]).encoded()
        let response = try await hubRequest(path: "files", body: body)
        guard response.status == 200 else { throw Self.httpError(response) }
        do {
            return try JSONDecoder().decode(StorageInfo.self, from: response.body)
        } catch {
            throw .clientError("the hub's storage information is not what IoT Hub sends")
        }
    }

    /// Tells the hub how an upload ended.
    func notifyBlobUploadStatus(correlationId: String, isSuccess: Bool, statusCode: Int, statusDescription: String)
        async throws(IoTHubError)
    {
        let body = JSONValue.object([
            "correlationId": .string(correlationId), "isSuccess": .bool(isSuccess),
            "statusCode": .integer(Int64(statusCode)),
            "statusDescription": .string(statusDescription),
        ]).encoded()
        let response = try await hubRequest(path: "files/notifications", body: body)
        guard (200..<300).contains(response.status) else { throw Self.httpError(response) }
    }

    /// Asks the hub for a blob, streams `body` (exactly `length` bytes) to blob storage as a
    /// block blob, and notifies the hub of the outcome, a failure included. Errors before the
    /// hub gave a blob are thrown as they are; later ones as ``BlobUploadFailure``.
    func uploadBlob<Body: AsyncSequence>(
        named blobName: String, length: Int, contentType: String?, body: Body
    ) async throws -> BlobUploadResult where Body.Element == Data {
        let info = try await storageInfo(forBlob: blobName)
        var headers = ["x-ms-blob-type": "BlockBlob", "x-ms-version": "2018-03-28"]
        if let contentType { headers["Content-Type"] = contentType }
        // Blob storage is another host, and the device's certificate is not for it.
        var storagePolicy = tlsPolicy
        storagePolicy.clientCertificate = nil
        let client = HTTPSClient(
            policy: storagePolicy, trustStore: trustStore, proxy: configuration.proxyOptions, timeoutSeconds: 3600)
        let outcome: Result<HTTPSClient.Response, IoTHubError>
        do throws(IoTHubError) {
            outcome = .success(
                try await client.send(
                    method: "PUT", url: info.blobURL, headers: headers, length: length, streaming: body))
        } catch {
            outcome = .failure(error)
        }
        let (isSuccess, statusCode, description): (Bool, Int, String) =
            switch outcome {
            case .success(let response):
                (
                    (200..<300).contains(response.status), response.status,
                    String(decoding: response.body.prefix(256), as: UTF8.self)
                )
            case .failure(let error): (false, 500, "\(error)")
            }
        do throws(IoTHubError) {
            try await notifyBlobUploadStatus(
                correlationId: info.correlationId, isSuccess: isSuccess, statusCode: statusCode,
                statusDescription: isSuccess ? "Created" : String(description.prefix(200)))
        } catch {
            if isSuccess {
                throw BlobUploadFailure(error: error, correlationId: info.correlationId, upstreamStatus: nil)
            }
            logger.warning("could not tell the hub about a failed upload", metadata: ["error": "\(error)"])
        }
        switch outcome {
        case .success where isSuccess:
            return BlobUploadResult(storageInfo: info)
        case .success(let response):
            throw BlobUploadFailure(
                error: .serviceError(
                    status: response.status, message: String(decoding: response.body.prefix(256), as: UTF8.self)),
                correlationId: info.correlationId, upstreamStatus: response.status)
        case .failure(let error):
            throw BlobUploadFailure(error: error, correlationId: info.correlationId, upstreamStatus: nil)
        }
    }

    /// A POST to the hub's file-upload endpoint `path`, authenticated with the current
    /// credential: a SAS token in the `Authorization` header, or the device's certificate.
    private func hubRequest(path: String, body: Data) async throws(IoTHubError) -> HTTPSClient.Response {
        guard credentials.moduleId == nil else {
            throw .clientError("file upload is for device identities, not modules")
        }
        var headers = [
            "Content-Type": "application/json", "Accept": "application/json",
            "User-Agent": PercentEncoding.encode(UserAgent.string + configuration.productInfo),
        ]
        var clientCertificate: X509Credential?
        if case .x509(let x509) = credentials.credential {
            clientCertificate = x509
        } else if let token = try await credentials.requestToken() {
            headers["Authorization"] = token.string
        }
        let authority = hostAndPort(configuration.gatewayHostName ?? hostName, configuration.httpsPort)
        let url =
            "https://\(authority)/devices/\(PercentEncoding.encode(deviceId))/\(path)?api-version=\(MQTTIdentity.apiVersion)"
        var policy = tlsPolicy
        policy.clientCertificate = clientCertificate
        let client = HTTPSClient(policy: policy, trustStore: trustStore, proxy: configuration.proxyOptions)
        return try await client.send(method: "POST", url: url, headers: headers, body: body)
    }

    private static func httpError(_ response: HTTPSClient.Response) -> IoTHubError {
        let text = String(decoding: response.body.prefix(512), as: UTF8.self)
        if response.status == 401 { return .credentialError("the hub refused the credentials: \(text)") }
        return .serviceError(status: response.status, message: text, retryAfterSeconds: response.retryAfterSeconds)
    }
}
