import FoundationEssentials
import Hummingbird
import IoTHubDevice
import IoTHubProtocol

/// `/blob`: file upload — in one call, or in the hub's steps (storage info, notification).
/// For device identities only.
struct BlobRoutes: RouteArea {
    let bridge: DeviceBridge

    /// Blob uploads are limited to this (Azure's Put Blob limit).
    static let uploadLimit = 256 * 1024 * 1024

    func addRoutes(to router: some RouterMethods<Context>) {
        router.group("blob")
            .post("sas", use: storageInfo)
            .post("notifications", use: notify)
            .put("**", use: upload)
    }

    @Sendable func storageInfo(_ request: Request, context: Context) async throws -> Response {
        try requireDeviceIdentity()
        try request.requireJSON()
        guard case .object(let members) = try await request.jsonBody(),
            case .string(let blobName)? = members["blobName"]
        else {
            throw ProblemDetails.invalid("the body must be {\"blobName\": \"…\"}", field: "blobName")
        }
        try Self.checkBlobName(blobName)
        let info = try await bridge.storageInfo(forBlob: blobName)
        return .json([
            "correlationId": .string(info.correlationId), "hostName": .string(info.hostName),
            "containerName": .string(info.containerName),
            "blobName": .string(info.blobName), "sasToken": .string(info.sasToken), "blobUrl": .string(info.blobURL),
        ])
    }

    @Sendable func notify(_ request: Request, context: Context) async throws -> Response {
        try requireDeviceIdentity()
        try request.requireJSON()
        let members = try await request.jsonBody().objectMembers(or: "the body must be a JSON object")
        guard case .string(let correlationId)? = members["correlationId"], !correlationId.isEmpty else {
            throw ProblemDetails.invalid("correlationId must be a non-empty string", field: "correlationId")
        }
        guard case .bool(let isSuccess)? = members["isSuccess"] else {
            throw ProblemDetails.invalid("isSuccess must be true or false", field: "isSuccess")
        }
        let code = try members.int32("statusCode")
        guard case .string(let description)? = members["statusDescription"] else {
            throw ProblemDetails.invalid("statusDescription must be a string", field: "statusDescription")
        }
        try await bridge.notifyBlobUploadStatus(
            correlationId: correlationId, isSuccess: isSuccess, statusCode: Int(code), statusDescription: description)
        return .noContent()
    }

    @Sendable func upload(_ request: Request, context: Context) async throws -> Response {
        try requireDeviceIdentity()
        let segments = context.parameters.getCatchAll()
        guard let blobName = PercentEncoding.strictlyDecode(segments.joined(separator: "/")[...]), !blobName.isEmpty
        else {
            throw ProblemDetails.invalid("the blob name is not valid percent-encoded UTF-8", field: "blobName")
        }
        try Self.checkBlobName(blobName)
        // HTTP/1.1: without Content-Length and without a chunked body there is no body (an empty
        // file); a chunked body has no length to give blob storage up front.
        let length: Int
        if let lengthText = request.headers[.contentLength] {
            guard let parsed = Int(lengthText), parsed >= 0 else {
                throw ProblemDetails.invalid("Content-Length is not a number", field: "Content-Length")
            }
            length = parsed
        } else if request.headers[.transferEncoding] != nil {
            throw ProblemDetails.invalid(
                "the upload needs a Content-Length (it is streamed to blob storage)", status: 411)
        } else {
            length = 0
        }
        guard length <= Self.uploadLimit else {
            throw ProblemDetails.invalid(
                "the file is \(length) bytes; at most \(Self.uploadLimit) can be uploaded in one request", status: 413)
        }
        let bodyFailure = SharedSlot<any Error>()
        let chunks = FailureRecordingSequence(base: request.body, failure: bodyFailure).map { buffer in
            Data(buffer.readableBytesView)
        }
        do {
            let result = try await bridge.uploadBlob(
                named: blobName, length: length, contentType: request.headers[.contentType], body: chunks)
            return .json(
                [
                    "blobName": .string(result.storageInfo.blobName), "blobUrl": .string(result.blobURLWithoutToken),
                    "correlationId": .string(result.storageInfo.correlationId),
                ],
                status: .created)
        } catch let failure as BlobUploadFailure {
            // The body stopped arriving or its framing broke: the library only knows that it
            // broke off, the answer says why (408, 400).
            if let bodyError = bodyFailure.take(), SidecarHTTP1Channel.isClientFault(bodyError) { throw bodyError }
            var problem: ProblemDetails
            if let upstreamStatus = failure.upstreamStatus {
                problem = ProblemDetails(
                    status: 502, code: "ServiceError",
                    detail: "blob storage answered \(upstreamStatus): \(failure.error)")
                problem.upstreamStatus = upstreamStatus
            } else {
                problem = ProblemDetails(failure.error, retryAfterSeconds: bridge.retryAfterSeconds)
            }
            problem.correlationId = failure.correlationId
            throw problem
        }
    }

    private func requireDeviceIdentity() throws(ProblemDetails) {
        guard !bridge.isModule else { throw .notForThisIdentity("file upload is for device identities, not modules") }
    }

    /// The device client's own check (``BlobName/validate(_:)``), made here before anything else
    /// happens (for an upload, before its body is read) and reported under this API's name for
    /// the field.
    private static func checkBlobName(_ name: String) throws(ProblemDetails) {
        do throws(IoTHubError) {
            try BlobName.validate(name)
        } catch {
            guard case .valueError(_, let reason) = error else {
                throw .invalid(SidecarEvent.message(of: error), field: "blobName")
            }
            throw .invalid("blobName \(reason)", field: "blobName")
        }
    }
}

/// `base`, keeping the error it ends with in `failure`, for a consumer that reports only that
/// the sequence failed.
struct FailureRecordingSequence<Base: AsyncSequence>: AsyncSequence {
    typealias Element = Base.Element

    let base: Base
    let failure: SharedSlot<any Error>

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: Base.AsyncIterator
        let failure: SharedSlot<any Error>

        // Concurrent like the base iterator's `next()`, which it calls with its own state.
        @concurrent mutating func next() async throws -> Element? {
            do {
                return try await base.next()
            } catch {
                failure.set(error)
                throw error
            }
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: base.makeAsyncIterator(), failure: failure)
    }
}
