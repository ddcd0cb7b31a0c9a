import HTTPTypes
import Hummingbird
import IoTHubProtocol

/// `/twin`: the device twin, its reported properties and a long-poll on its desired ones.
struct TwinRoutes: RouteArea {
    let bridge: DeviceBridge

    func addRoutes(to router: some RouterMethods<Context>) {
        router.group("twin")
            .get(use: read)
            .patch(use: patchReported)
            .get("desired", use: pollDesired)
    }

    @Sendable func read(_ request: Request, context: Context) async throws -> Response {
        .json(data: try await bridge.twin().encoded())
    }

    @Sendable func patchReported(_ request: Request, context: Context) async throws -> Response {
        try request.requireJSON(also: ["application/merge-patch+json"])
        let patch = try await request.jsonBody().objectMembers(or: "the patch must be a JSON object")
        let version = try await bridge.updateReportedProperties(patch)
        return .json(["version": .integer(Int64(version))])
    }

    @Sendable func pollDesired(_ request: Request, context: Context) async throws -> Response {
        let timeout = try request.pollTimeout()
        let since = try request.integerQuery("since", default: 0, range: 0...Int(Int32.max))
        return try await LongPoll.respond(to: request, timeout: timeout, from: bridge.desiredUpdates(since: since)) {
            update in
            var members: [String: JSONValue] = ["desired": update.desired, "version": .integer(Int64(update.version))]
            if let patches = update.patches { members["patches"] = .array(patches) }
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return (headers, JSONValue.object(members).encoded())
        }
    }
}
