import Foundation
import HTTPTypes
import Hummingbird
import IoTHubProtocol

/// `POST /messages`: device-to-cloud messages, one or a batch.
struct TelemetryRoutes: RouteArea {
    let bridge: DeviceBridge

    func addRoutes(to router: some RouterMethods<Context>) {
        router.post("messages", use: send)
    }

    @Sendable func send(_ request: Request, context: Context) async throws -> Response {
        let body = try await request.collectedBody()
        if request.mediaType == MessageMapping.batchMediaType {
            let messages = try MessageMapping.batch(body, isModule: bridge.isModule)
            let outcomes = await bridge.send(messages)
            // Built by hand like the single answer: JSONEncoder was the largest cost of a batch.
            var text = #"{"results":["#
            for (index, (message, outcome)) in zip(messages, outcomes).enumerated() {
                if index > 0 { text += "," }
                switch outcome {
                case .success:
                    text += #"{"messageId":"# + JSONText.quoted(message.messageId ?? "") + #","status":200}"#
                case .failure(let error):
                    let problem = ProblemDetails(error, retryAfterSeconds: bridge.retryAfterSeconds)
                    text += #"{"error":"# + String(decoding: problem.encoded(), as: UTF8.self) + #","status":\#(problem.status)}"#
                }
            }
            return .json(data: Data((text + "]}").utf8))
        }
        let message = try MessageMapping.message(payload: body, headers: request.headers, isModule: bridge.isModule)
        try await bridge.send(message)
        // Built by hand: this answer is the hot path, and JSONEncoder costs more than the rest.
        return .json(data: Data((#"{"messageId":"# + JSONText.quoted(message.messageId ?? "") + "}").utf8))
    }
}
