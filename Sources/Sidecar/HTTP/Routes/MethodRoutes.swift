import HTTPTypes
import Hummingbird
import IoTHubProtocol

/// `/methods`: direct-method requests by long-poll, and their answers.
struct MethodRoutes: RouteArea {
    let bridge: DeviceBridge

    func addRoutes(to router: some RouterMethods<Context>) {
        router.group("methods")
            .get(use: receive)
            .post(":requestId/response", use: answer)
    }

    @Sendable func receive(_ request: Request, context: Context) async throws -> Response {
        let timeout = try request.pollTimeout()
        let name = request.uri.queryParameters.get("name")
        if let name, name.isEmpty { throw ProblemDetails.invalid("name must not be empty", field: "name") }
        return try await LongPoll.respond(to: request, timeout: timeout, from: bridge.methodRequests(named: name)) {
            methodRequest in
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return (headers, MethodRequestJSON.json(methodRequest).encoded())
        }
    }

    @Sendable func answer(_ request: Request, context: Context) async throws -> Response {
        let requestId = try context.pathParameter("requestId")
        try request.requireJSON()
        let members = try await request.jsonBody().objectMembers(
            or: "the answer must be a JSON object {status, payload}")
        let status = try members.int32("status")
        let payload = (members["payload"] ?? .null).encoded()
        do {
            try await bridge.answerMethodRequest(requestId, status: Int(status), payload: payload)
        } catch .expired {
            throw ProblemDetails(
                status: 410, code: "MethodRequestExpired",
                detail:
                    "method request \(requestId) arrived more than \(Int(MethodRequestQueue.answerWindow)) s ago; the hub waits at most 300 s"
            )
        } catch .unknownRequest {
            throw ProblemDetails.notFound(
                "no method request \(requestId) is waiting for an answer (answered already, or never handed out)")
        } catch .notSent(let error) {
            throw error
        }
        return .noContent()
    }
}
