import Foundation
import HTTPTypes
import Hummingbird
import IoTHubDevice
import IoTHubProtocol
import NIOConcurrencyHelpers
import NIOCore

/// The REST endpoints of `openapi/sidecar.yaml`, each a thin mapping onto ``DeviceBridge`` and
/// its device client. Errors are thrown as ``ProblemDetails`` or `IoTHubError`;
/// ``ProblemMiddleware`` turns them into problem documents.
struct SidecarAPI: Sendable {
    typealias Context = BasicRequestContext

    let bridge: DeviceBridge
    /// The OpenAPI document served at `/openapi.yaml`.
    let openAPIDocument: Data

    /// Request bodies are limited to this, except blob uploads.
    static let bodyLimit = 16 * 1024 * 1024
    /// Blob uploads are limited to this (Azure's Put Blob limit).
    static let blobLimit = 256 * 1024 * 1024
    /// The longest long-poll, below the server's idle timeout.
    static let maximumTimeout = 55

    /// Every route as (method, path pattern in OpenAPI form): the contract test compares this
    /// list with `openapi/sidecar.yaml`.
    static let routes: [(method: HTTPRequest.Method, path: String)] = [
        (.post, "/messages"), (.get, "/inbox"), (.delete, "/inbox/{lockToken}"), (.post, "/inbox/{lockToken}/abandon"),
        (.get, "/twin"), (.patch, "/twin"), (.get, "/twin/desired"), (.get, "/methods"), (.post, "/methods/{requestId}/response"),
        (.post, "/blob/sas"), (.post, "/blob/notifications"), (.put, "/blob/{blobName}"), (.get, "/status"), (.post, "/connect"),
        (.post, "/disconnect"), (.put, "/sastoken"), (.get, "/events"), (.get, "/healthz"), (.get, "/readyz"), (.get, "/metrics"),
        (.get, "/openapi.yaml"),
    ]

    func register(on router: Router<Context>) {
        router.post("/messages", use: sendMessage)
        router.get("/inbox", use: receiveMessage)
        router.delete("/inbox/:lockToken", use: completeMessage)
        router.post("/inbox/:lockToken/abandon", use: abandonMessage)
        router.get("/twin", use: getTwin)
        router.patch("/twin", use: patchTwin)
        router.get("/twin/desired", use: pollDesired)
        router.get("/methods", use: receiveMethodRequest)
        router.post("/methods/:requestId/response", use: sendMethodResponse)
        router.post("/blob/sas", use: getStorageInfo)
        router.post("/blob/notifications", use: notifyBlobUploadStatus)
        router.put("/blob/**", use: uploadBlob)
        router.get("/status", use: getStatus)
        router.post("/connect", use: connect)
        router.post("/disconnect", use: disconnect)
        router.put("/sastoken", use: updateSASToken)
        router.get("/events", use: streamEvents)
        router.get("/healthz", use: health)
        router.get("/readyz", use: readiness)
        router.get("/metrics", use: metrics)
        router.get("/openapi.yaml", use: openAPI)
    }

    // MARK: Telemetry

    @Sendable func sendMessage(_ request: Request, context: Context) async throws -> Response {
        let body = try await Self.collect(request, limit: Self.bodyLimit)
        if Self.mediaType(of: request) == MessageMapping.batchMediaType {
            let messages = try MessageMapping.batch(body, isModule: bridge.isModule)
            let outcomes = await bridge.send(messages)
            // Built by hand like the single answer: JSONEncoder was the largest cost of a batch.
            var text = #"{"results":["#
            for (index, (message, outcome)) in zip(messages, outcomes).enumerated() {
                if index > 0 { text += "," }
                switch outcome {
                case .success:
                    text += #"{"messageId":"# + Self.quoted(message.messageId ?? "") + #","status":200}"#
                case .failure(let error):
                    let problem = ProblemDetails(error, retryAfterSeconds: bridge.retryAfterSeconds)
                    text += #"{"error":"# + String(decoding: problem.encoded(), as: UTF8.self) + #","status":\#(problem.status)}"#
                }
            }
            return Self.json(data: Data((text + "]}").utf8))
        }
        let message = try MessageMapping.message(payload: body, headers: request.headers, isModule: bridge.isModule)
        try await bridge.send(message)
        // Built by hand: this answer is the hot path, and JSONEncoder costs more than the rest.
        return Self.json(data: Data((#"{"messageId":"# + Self.quoted(message.messageId ?? "") + "}").utf8))
    }

    // MARK: Cloud-to-device

    @Sendable func receiveMessage(_ request: Request, context: Context) async throws -> Response {
        let timeout = try Self.timeout(request)
        if bridge.inbox.depth.waiting == 0 { try await bridge.prepareToWait() }
        let inbox = bridge.inbox
        let taken = LeaseHolder<Inbox.Lease>()
        let bridge = self.bridge
        let lease = try await Self.cancelOnClose(request, taken: taken, giveBack: { try? inbox.giveBack($0.lockToken) }) {
            await bridge.untilDraining {
                let lease = await inbox.receive(timeout: .seconds(timeout))
                if let lease { taken.set(lease) }
                return lease
            }
        }
        guard let lease else { return Self.noContent(closing: true) }
        var headers = MessageMapping.headers(for: lease.message)
        headers[.eTag] = "\"\(lease.lockToken)\""
        headers[.contentType] = lease.message.contentType ?? "application/octet-stream"
        headers[Self.deliveryCountField] = String(lease.deliveryCount)
        headers[.connection] = "close"
        let payload = lease.message.payload
        let token = lease.lockToken
        // Not written: the message was not delivered.
        return Response(status: .ok, headers: headers, body: Self.body(payload, ifNotWritten: { try? inbox.giveBack(token) }))
    }

    @Sendable func completeMessage(_ request: Request, context: Context) async throws -> Response {
        try withLockToken(context) { (token: String) throws(Inbox.LeaseError) in try bridge.inbox.complete(token) }
    }

    @Sendable func abandonMessage(_ request: Request, context: Context) async throws -> Response {
        try withLockToken(context) { (token: String) throws(Inbox.LeaseError) in try bridge.inbox.abandon(token) }
    }

    /// Runs `action` on the path's lock token: 204, or 404 when no message is locked under it.
    private func withLockToken(_ context: Context, _ action: (String) throws(Inbox.LeaseError) -> Void) throws -> Response {
        let token = try Self.pathParameter("lockToken", context)
        do {
            try action(token)
        } catch {
            throw ProblemDetails.notFound("no message is locked under \(token)")
        }
        return Self.noContent()
    }

    // MARK: Twin

    @Sendable func getTwin(_ request: Request, context: Context) async throws -> Response {
        let twin = try await bridge.client.twin()
        return Self.json(data: twin.encoded())
    }

    @Sendable func patchTwin(_ request: Request, context: Context) async throws -> Response {
        try Self.requireJSON(request, also: ["application/merge-patch+json"])
        let body = try await Self.collect(request, limit: Self.bodyLimit)
        guard case .object(let patch) = try Self.parseJSON(body) else {
            throw ProblemDetails.invalid("the patch must be a JSON object")
        }
        let version = try await bridge.client.updateReportedProperties(patch)
        return Self.json(["version": .integer(Int64(version))])
    }

    @Sendable func pollDesired(_ request: Request, context: Context) async throws -> Response {
        let timeout = try Self.timeout(request)
        let since = try Self.integerQuery(request, "since", default: 0, range: 0...Int(Int32.max))
        let cursor = bridge.desired
        if cursor.current(since: since) == nil {
            try await bridge.prepareToWait()
            if cursor.current(since: 0) == nil {
                // Never read yet (no connection so far): read the twin now.
                cursor.replace(desired: try await bridge.client.twin().desired)
            }
        }
        let update = try await Self.cancelOnClose(request, taken: LeaseHolder<DesiredPropertiesCursor.Update>(), giveBack: { _ in }) {
            await self.bridge.untilDraining { await cursor.poll(since: since, timeout: .seconds(timeout)) }
        }
        guard let update else { return Self.noContent(closing: true) }
        var members: [String: JSONValue] = ["desired": update.desired, "version": .integer(Int64(update.version))]
        if let patches = update.patches { members["patches"] = .array(patches) }
        var response = Self.json(.object(members))
        response.headers[.connection] = "close"
        return response
    }

    // MARK: Direct methods

    @Sendable func receiveMethodRequest(_ request: Request, context: Context) async throws -> Response {
        let timeout = try Self.timeout(request)
        let name = request.uri.queryParameters.get("name")
        if let name, name.isEmpty { throw ProblemDetails.invalid("name must not be empty", field: "name") }
        let methods = bridge.methods
        if methods.pending == 0 { try await bridge.prepareToWait() }
        let taken = LeaseHolder<MethodRequest>()
        let bridge = self.bridge
        let next = try await Self.cancelOnClose(request, taken: taken, giveBack: { methods.requeue($0) }) {
            await bridge.untilDraining {
                let next = await methods.next(name: name, timeout: .seconds(timeout))
                if let next { taken.set(next) }
                return next
            }
        }
        guard let next else { return Self.noContent(closing: true) }
        let body = MethodRequestJSON.json(next).encoded()
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.connection] = "close"
        return Response(status: .ok, headers: headers, body: Self.body(body, ifNotWritten: { methods.requeue(next) }))
    }

    @Sendable func sendMethodResponse(_ request: Request, context: Context) async throws -> Response {
        let requestId = try Self.pathParameter("requestId", context)
        try Self.requireJSON(request)
        let body = try await Self.collect(request, limit: Self.bodyLimit)
        guard case .object(let members) = try Self.parseJSON(body) else {
            throw ProblemDetails.invalid("the answer must be a JSON object {status, payload}")
        }
        let status32 = try Self.int32Member(members, "status")
        do {
            try bridge.methods.claimAnswer(for: requestId)
        } catch .expired {
            throw ProblemDetails(status: 410, code: "MethodRequestExpired", detail: "method request \(requestId) arrived more than \(Int(MethodRequestQueue.answerWindow)) s ago; the hub waits at most 300 s")
        } catch {
            throw ProblemDetails.notFound("no method request \(requestId) is waiting for an answer (answered already, or never handed out)")
        }
        let payload = (members["payload"] ?? .null).encoded()
        do throws(IoTHubError) {
            try await bridge.client.respond(MethodResponse(requestId: requestId, status: Int(status32), payload: payload))
        } catch {
            // Not delivered: the answer may be tried again.
            bridge.methods.releaseClaim(for: requestId)
            throw error
        }
        return Self.noContent()
    }

    // MARK: File upload

    @Sendable func getStorageInfo(_ request: Request, context: Context) async throws -> Response {
        try requireDeviceIdentity()
        try Self.requireJSON(request)
        let body = try await Self.collect(request, limit: Self.bodyLimit)
        guard case .object(let members) = try Self.parseJSON(body), case .string(let blobName)? = members["blobName"] else {
            throw ProblemDetails.invalid("the body must be {\"blobName\": \"…\"}", field: "blobName")
        }
        try Self.checkBlobName(blobName)
        let info = try await bridge.client.storageInfo(forBlob: blobName)
        return Self.json(Self.json(info))
    }

    @Sendable func notifyBlobUploadStatus(_ request: Request, context: Context) async throws -> Response {
        try requireDeviceIdentity()
        try Self.requireJSON(request)
        let body = try await Self.collect(request, limit: Self.bodyLimit)
        guard case .object(let members) = try Self.parseJSON(body) else {
            throw ProblemDetails.invalid("the body must be a JSON object")
        }
        guard case .string(let correlationId)? = members["correlationId"], !correlationId.isEmpty else {
            throw ProblemDetails.invalid("correlationId must be a non-empty string", field: "correlationId")
        }
        guard case .bool(let isSuccess)? = members["isSuccess"] else {
            throw ProblemDetails.invalid("isSuccess must be true or false", field: "isSuccess")
        }
        let code = try Self.int32Member(members, "statusCode")
        guard case .string(let description)? = members["statusDescription"] else {
            throw ProblemDetails.invalid("statusDescription must be a string", field: "statusDescription")
        }
        try await bridge.client.notifyBlobUploadStatus(correlationId: correlationId, isSuccess: isSuccess, statusCode: Int(code), statusDescription: description)
        return Self.noContent()
    }

    @Sendable func uploadBlob(_ request: Request, context: Context) async throws -> Response {
        try requireDeviceIdentity()
        let segments = context.parameters.getCatchAll()
        guard let blobName = segments.joined(separator: "/").removingPercentEncoding, !blobName.isEmpty else {
            throw ProblemDetails.invalid("the blob name is not valid percent-encoded UTF-8", field: "blobName")
        }
        try Self.checkBlobName(blobName)
        // HTTP/1.1: without Content-Length and without a chunked body there is no body (an empty
        // file); a chunked body has no length to give blob storage up front.
        let length: Int
        if let lengthText = request.headers[.contentLength] {
            guard let parsed = Int(lengthText), parsed >= 0 else { throw ProblemDetails.invalid("Content-Length is not a number", field: "Content-Length") }
            length = parsed
        } else if request.headers[.transferEncoding] != nil {
            throw ProblemDetails.invalid("the upload needs a Content-Length (it is streamed to blob storage)", status: 411)
        } else {
            length = 0
        }
        guard length <= Self.blobLimit else {
            throw ProblemDetails.invalid("the file is \(length) bytes; at most \(Self.blobLimit) can be uploaded in one request", status: 413)
        }
        let bodyFailure = LeaseHolder<any Error>()
        let chunks = FailureRecordingSequence(base: request.body, failure: bodyFailure).map { buffer in Data(buffer.readableBytesView) }
        do {
            let result = try await bridge.client.uploadBlob(
                named: blobName, length: length, contentType: request.headers[.contentType], body: chunks)
            return Self.json(
                ["blobName": .string(result.storageInfo.blobName), "blobUrl": .string(result.blobURLWithoutToken), "correlationId": .string(result.storageInfo.correlationId)],
                status: .created)
        } catch let failure as BlobUploadFailure {
            // The body stopped arriving or its framing broke: the library only knows that it
            // broke off, the answer says why (408, 400).
            if let bodyError = bodyFailure.take(), SidecarHTTP1Channel.isClientFault(bodyError) { throw bodyError }
            var problem: ProblemDetails
            if let upstreamStatus = failure.upstreamStatus {
                problem = ProblemDetails(status: 502, code: "ServiceError", detail: "blob storage answered \(upstreamStatus): \(failure.error)")
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
            guard case .valueError(_, let reason) = error else { throw .invalid(SidecarEvent.message(of: error), field: "blobName") }
            throw .invalid("blobName \(reason)", field: "blobName")
        }
    }

    // MARK: Connection

    @Sendable func getStatus(_ request: Request, context: Context) async throws -> Response {
        let client = bridge.client
        let status = client.status
        var identity: [String: JSONValue] = [
            "hostName": .string(client.hostName), "deviceId": .string(client.deviceId), "authentication": .string(status.credential.rawValue),
        ]
        if let moduleId = client.moduleId { identity["moduleId"] = .string(moduleId) }
        if let gateway = client.configuration.gatewayHostName { identity["gatewayHostName"] = .string(gateway) }
        var members: [String: JSONValue] = [
            "identity": .object(identity), "state": .string(status.state.rawValue), "since": .string(Timestamp.string(status.since)),
            "newSasTokenRequired": .bool(bridge.isNewSASTokenRequired),
            "transport": .string(client.configuration.websockets ? "mqtt-websockets" : "mqtt"),
        ]
        // The proxy's description leaves its password out.
        if let proxy = client.configuration.proxyOptions { members["proxy"] = .string("\(proxy)") }
        if let error = status.lastError { members["lastError"] = SidecarEvent.lastError(error) }
        if let expiry = status.tokenExpiry { members["tokenExpiry"] = .string(Timestamp.string(expiry)) }
        return Self.json(.object(members))
    }

    @Sendable func connect(_ request: Request, context: Context) async throws -> Response {
        try await bridge.client.connect()
        return Self.noContent()
    }

    @Sendable func disconnect(_ request: Request, context: Context) async throws -> Response {
        await bridge.client.disconnect()
        return Self.noContent()
    }

    @Sendable func updateSASToken(_ request: Request, context: Context) async throws -> Response {
        if let type = Self.mediaType(of: request), type != "text/plain" {
            throw ProblemDetails.invalid("send the token as text/plain, not \(type)", status: 415)
        }
        let body = try await Self.collect(request, limit: Self.bodyLimit)
        guard bridge.client.status.credential == .sasToken else {
            throw ProblemDetails.notForThisIdentity("this sidecar's identity uses a \(bridge.client.status.credential == .x509 ? "certificate" : "key"), not a SAS token given to it")
        }
        let text = String(decoding: body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        try await bridge.updateSASToken(text)
        return Self.noContent()
    }

    // MARK: Events

    @Sendable func streamEvents(_ request: Request, context: Context) async throws -> Response {
        let events = bridge.events.stream()
        let status = bridge.client.status
        let first = SidecarEvent.connection(ConnectionStateChange(state: status.state, since: status.since, reason: nil))
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                try await writer.write(ByteBuffer(string: first.wireFormat))
                try await withThrowingTaskGroup(of: Void.self) { group in
                    let (ticks, tick) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(64))
                    group.addTask {
                        for await event in events { tick.yield(event.wireFormat) }
                        tick.finish()
                    }
                    group.addTask {
                        while !Task.isCancelled {
                            try await Task.sleep(for: .seconds(15))
                            tick.yield(SidecarEvent.keepAlive)
                        }
                    }
                    for await text in ticks {
                        try await writer.write(ByteBuffer(string: text))
                    }
                    group.cancelAll()
                }
                try await writer.finish(nil)
            })
    }

    // MARK: Operations

    @Sendable func health(_ request: Request, context: Context) async throws -> Response {
        Self.json(["status": "ok"])
    }

    @Sendable func readiness(_ request: Request, context: Context) async throws -> Response {
        let status = bridge.client.status
        guard status.state == .connected else {
            var detail = "the client is \(status.state.rawValue)"
            if let error = status.lastError { detail += " (last error: \(error))" }
            throw ProblemDetails(status: 503, code: "NoConnectionError", detail: detail)
        }
        return Self.json(["status": "ready", "state": "connected"])
    }

    @Sendable func metrics(_ request: Request, context: Context) async throws -> Response {
        let metrics = bridge.metrics
        let depth = bridge.inbox.depth
        metrics.set(.inboxMessages, to: Double(depth.waiting + depth.locked))
        metrics.set(.inboxDropped, to: Double(depth.dropped))
        metrics.set(.pendingMethodRequests, to: Double(bridge.methods.pending))
        metrics.set(.connected, to: bridge.client.isConnected ? 1 : 0)
        metrics.set(.reconnectAttempts, to: Double(bridge.client.reconnectionAttempts))
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: metrics.exposition())))
    }

    @Sendable func openAPI(_ request: Request, context: Context) async throws -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/yaml"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: openAPIDocument)))
    }
}

// MARK: - Request and response helpers

extension SidecarAPI {
    static let deliveryCountField = HTTPField.Name("iothub-deliverycount") ?? .contentType

    /// The request's media type, lower-case, without parameters; nil without `Content-Type`.
    static func mediaType(of request: Request) -> String? {
        guard let value = request.headers[.contentType] else { return nil }
        return mediaType(ofContentType: value)
    }

    /// The media type of a `Content-Type` value: before any `;`, without surrounding blanks,
    /// in lower case.
    static func mediaType(ofContentType value: String) -> String {
        let utf8 = value.utf8
        let end = utf8.firstIndex(of: UInt8(ascii: ";")) ?? utf8.endIndex
        let isBlank = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        guard let first = utf8[..<end].firstIndex(where: { !isBlank($0) }), let last = utf8[..<end].lastIndex(where: { !isBlank($0) }) else {
            return ""
        }
        let type = utf8[first...last]
        // Usually already lower case: no copy byte by byte.
        if !type.contains(where: { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) }) { return String(Substring(type)) }
        return String(decoding: type.map { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) ? $0 + 32 : $0 }, as: UTF8.self)
    }

    /// `text` as a JSON string literal, quotes included.
    static func quoted(_ text: String) -> String {
        // Most values (message ids, lock tokens) need no escaping: copy them in one piece.
        if !text.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            return "\"" + text + "\""
        }
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20: result += String(format: "\\u%04x", scalar.value)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }

    /// A JSON endpoint takes no `Content-Type` as JSON, and refuses any other media type.
    static func requireJSON(_ request: Request, also others: Set<String> = []) throws(ProblemDetails) {
        guard let type = mediaType(of: request), type != "application/json", !others.contains(type) else { return }
        throw .invalid("send the body as application/json, not \(type)", status: 415)
    }

    static func collect(_ request: Request, limit: Int) async throws -> Data {
        do {
            var request = request
            let buffer = try await request.collectBody(upTo: limit)
            return Data(buffer.readableBytesView)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw ProblemDetails.invalid("the request body exceeds \(limit) bytes", status: 413)
        } catch is NIOTooManyBytesError {
            throw ProblemDetails.invalid("the request body exceeds \(limit) bytes", status: 413)
        }
    }

    static func parseJSON(_ data: Data) throws(ProblemDetails) -> JSONValue {
        do {
            return try JSONValue(parsing: data)
        } catch {
            throw .invalid("the body is not valid JSON")
        }
    }

    static func pathParameter(_ name: String, _ context: Context) throws(ProblemDetails) -> String {
        guard let raw = context.parameters.get(name), let value = raw.removingPercentEncoding, !value.isEmpty else {
            throw .invalid("\(name) is missing or not valid percent-encoded UTF-8", field: name)
        }
        return value
    }

    /// The `timeout` query parameter: 0–55 seconds, 30 by default.
    static func timeout(_ request: Request) throws(ProblemDetails) -> Int {
        try integerQuery(request, "timeout", default: 30, range: 0...maximumTimeout)
    }

    /// The member `name` of a JSON body, which must be a 32-bit integer (as the contract says).
    static func int32Member(_ members: [String: JSONValue], _ name: String) throws(ProblemDetails) -> Int32 {
        guard case .integer(let value)? = members[name], let value32 = Int32(exactly: value) else {
            throw .invalid("\(name) must be an integer from \(Int32.min) to \(Int32.max)", field: name)
        }
        return value32
    }

    static func integerQuery(_ request: Request, _ name: String, default value: Int, range: ClosedRange<Int>) throws(ProblemDetails) -> Int {
        guard let text = request.uri.queryParameters.get(name) else { return value }
        guard let number = Int(text), range.contains(number) else {
            throw .invalid("\(name) must be an integer from \(range.lowerBound) to \(range.upperBound)", field: name)
        }
        return number
    }

    /// Runs a long-poll wait that is cancelled when the caller's connection closes; whatever
    /// the wait took goes back (`giveBack`) when it cannot be answered any more.
    static func cancelOnClose<T: Sendable>(
        _ request: Request, taken: LeaseHolder<T>, giveBack: @escaping @Sendable (T) -> Void, _ wait: @escaping @Sendable () async -> T?
    ) async throws -> T? {
        do {
            let value = try await request.body.consumeWithCancellationOnInboundClose { _ in await wait() }
            if let value, Task.isCancelled {
                // Taken while the server was cancelling this request: it cannot be answered.
                giveBack(value)
                return nil
            }
            return value
        } catch {
            // The caller went away: what the wait took was never answered.
            if let value = taken.take() { giveBack(value) }
            throw error
        }
    }

    /// A body that runs `ifNotWritten` when it cannot be written to the caller (gone).
    static func body(_ data: Data, ifNotWritten: @escaping @Sendable () -> Void) -> ResponseBody {
        ResponseBody(contentLength: data.count) { writer in
            do {
                try await writer.write(ByteBuffer(bytes: data))
                try await writer.finish(nil)
            } catch {
                ifNotWritten()
                throw error
            }
        }
    }

    static func noContent(closing: Bool = false) -> Response {
        var headers = HTTPFields()
        if closing { headers[.connection] = "close" }
        return Response(status: .noContent, headers: headers)
    }

    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        json(data: value.encoded(), status: status)
    }

    static func json(data: Data, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func json(_ info: StorageInfo) -> JSONValue {
        [
            "correlationId": .string(info.correlationId), "hostName": .string(info.hostName), "containerName": .string(info.containerName),
            "blobName": .string(info.blobName), "sasToken": .string(info.sasToken), "blobUrl": .string(info.blobURL),
        ]
    }
}

/// `base`, keeping the error it ends with in `failure`, for a consumer that reports only that
/// the sequence failed.
struct FailureRecordingSequence<Base: AsyncSequence>: AsyncSequence {
    typealias Element = Base.Element

    let base: Base
    let failure: LeaseHolder<any Error>

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: Base.AsyncIterator
        let failure: LeaseHolder<any Error>

        mutating func next() async throws -> Element? {
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

/// Holds what a long-poll took, so that it can be given back if the poll is cancelled.
final class LeaseHolder<T: Sendable>: Sendable {
    private let value = NIOLockedValueBox<T?>(nil)

    func set(_ newValue: T) { value.withLockedValue { $0 = newValue } }

    func take() -> T? { value.withLockedValue { value in defer { value = nil }; return value } }
}
