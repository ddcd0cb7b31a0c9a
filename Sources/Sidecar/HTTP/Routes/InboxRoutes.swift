import HTTPTypes
import Hummingbird
import IoTHubDevice
import IoTHubProtocol

/// `/inbox`: cloud-to-device messages, received under a lock, then completed or abandoned.
struct InboxRoutes: RouteArea {
    let bridge: DeviceBridge

    static let deliveryCountField = HTTPField.Name("iothub-deliverycount") ?? .contentType

    func addRoutes(to router: some RouterMethods<Context>) {
        router.group("inbox")
            .get(use: receive)
            .delete(":lockToken", use: complete)
            .post(":lockToken/abandon", use: abandon)
    }

    @Sendable func receive(_ request: Request, context: Context) async throws -> Response {
        let json = ReceivedMessageJSON.isAccepted(by: request.headers)
        return try await LongPoll.respond(to: request, timeout: request.pollTimeout(), from: bridge.inboxMessages) {
            lease in
            if json {
                var headers = HTTPFields()
                headers[.eTag] = "\"\(lease.lockToken)\""
                headers[.contentType] = ReceivedMessageJSON.mediaType
                return (headers, ReceivedMessageJSON.json(of: lease).encoded())
            }
            var headers = MessageMapping.headers(for: lease.message)
            headers[.eTag] = "\"\(lease.lockToken)\""
            headers[.contentType] = lease.message.contentType ?? "application/octet-stream"
            headers[Self.deliveryCountField] = String(lease.deliveryCount)
            return (headers, lease.message.payload)
        }
    }

    @Sendable func complete(_ request: Request, context: Context) async throws -> Response {
        try await withLockToken(context) { (token: String) async throws(CloudToDeviceInbox.LeaseError) in
            try await bridge.completeMessage(lockToken: token)
        }
    }

    @Sendable func abandon(_ request: Request, context: Context) async throws -> Response {
        try await withLockToken(context) { (token: String) async throws(CloudToDeviceInbox.LeaseError) in
            try await bridge.abandonMessage(lockToken: token)
        }
    }

    /// Runs `action` on the path's lock token: 204 once it is on disk, 404 when no message is
    /// locked under it, 500 when the inbox could not record it (the message stays as it was).
    private func withLockToken(
        _ context: Context, _ action: (String) async throws(CloudToDeviceInbox.LeaseError) -> Void
    ) async throws -> Response {
        let token = try context.pathParameter("lockToken")
        do {
            try await action(token)
        } catch .unknownLockToken {
            throw ProblemDetails.notFound("no message is locked under \(token)")
        } catch .storageFailed(let detail) {
            throw ProblemDetails(status: 500, code: "ClientError", detail: "the inbox could not record it: \(detail)")
        }
        return .noContent()
    }
}
