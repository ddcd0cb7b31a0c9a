import FoundationEssentials
import HTTPTypes
import Hummingbird
import IoTHubDevice
import IoTHubProtocol

/// `POST /messages`: device-to-cloud messages, one or a batch — sent at once (200 once the hub
/// acknowledged), or stored and forwarded (202 once on disk in the outbox, with
/// `Prefer: respond-async` or `--telemetry-delivery async`). `GET /outbox`: the outbox.
struct TelemetryRoutes: RouteArea {
    let bridge: DeviceBridge

    func addRoutes(to router: some RouterMethods<Context>) {
        router.post("messages", use: send)
        router.get("outbox", use: outbox)
    }

    @Sendable func send(_ request: Request, context: Context) async throws -> Response {
        let body = try await request.collectedBody()
        let asked = Preferences(request.headers).respondAsync
        let storeAndForward = bridge.hasOutbox && (asked || bridge.defaultDelivery == .async)
        let isBatch = request.mediaType == MessageMapping.batchMediaType
        let messages =
            isBatch
            ? try MessageMapping.batch(body, isModule: bridge.isModule)
            : [try MessageMapping.message(payload: body, headers: request.headers, isModule: bridge.isModule)]
        if storeAndForward {
            let ids: [String]
            do {
                ids = try await bridge.accept(messages)
            } catch {
                throw ProblemDetails(error, inBatch: isBatch, retryAfterSeconds: bridge.retryAfterSeconds)
            }
            var response =
                isBatch
                ? Self.batchAnswer(ids.map { ($0, .success(())) }, status: .accepted)
                : Self.singleAnswer(ids.first ?? "", status: .accepted)
            if asked { response.headers[.preferenceApplied] = Preferences.respondAsync }
            return response
        }
        guard isBatch else {
            let message = messages[0]
            try await bridge.send(message)
            return Self.singleAnswer(message.messageId ?? "", status: .ok)
        }
        let outcomes = await bridge.send(messages)
        let retryAfterSeconds = bridge.retryAfterSeconds
        return Self.batchAnswer(
            zip(messages, outcomes).map { message, outcome in
                (message.messageId ?? "", outcome.mapError { ProblemDetails($0, retryAfterSeconds: retryAfterSeconds) })
            }, status: .ok)
    }

    /// `{"messageId": …}`, built by hand: this answer is the hot path, and JSONEncoder costs
    /// more than the rest.
    private static func singleAnswer(_ messageId: String, status: HTTPResponse.Status) -> Response {
        .json(data: Data((#"{"messageId":"# + JSONText.quoted(messageId) + "}").utf8), status: status)
    }

    /// `{"results": [{"messageId", "status"} or {"error", "status"}, …]}`, built by hand like
    /// the single answer: JSONEncoder was the largest cost of a batch.
    private static func batchAnswer(
        _ outcomes: [(messageId: String, outcome: Result<Void, ProblemDetails>)], status: HTTPResponse.Status
    ) -> Response {
        var text = #"{"results":["#
        for (index, entry) in outcomes.enumerated() {
            if index > 0 { text += "," }
            switch entry.outcome {
            case .success:
                text += #"{"messageId":"# + JSONText.quoted(entry.messageId) + #","status":\#(status.code)}"#
            case .failure(let problem):
                text +=
                    #"{"error":"# + String(decoding: problem.encoded(), as: UTF8.self)
                    + #","status":\#(problem.status)}"#
            }
        }
        return .json(data: Data((text + "]}").utf8), status: status)
    }

    @Sendable func outbox(_ request: Request, context: Context) async throws -> Response {
        guard let report = await bridge.outboxReport() else {
            throw ProblemDetails.notFound("this sidecar has no outbox")
        }
        let status = report.status
        let configuration = report.configuration
        var members: [String: JSONValue] = [
            "delivery": .string(report.defaultDelivery.rawValue), "directory": .string(configuration.directory),
            "messages": .integer(Int64(status.messages)), "bytes": .integer(Int64(status.bytes)),
            "maximumBytes": .integer(Int64(status.maximumBytes)), "full": .bool(status.isFull),
            "whenFull": .string(configuration.whenFull.rawValue),
            "timeToLiveSeconds": .integer(configuration.timeToLive.components.seconds),
            "drainRate": .integer(Int64(configuration.drainRate ?? 0)),
            "delivered": .integer(Int64(status.delivered)), "expired": .integer(Int64(status.expired)),
            "dropped": .integer(Int64(status.dropped)), "rejected": .integer(Int64(status.rejected)),
            "repair": [
                "quarantinedSpans": .integer(Int64(status.quarantinedSpans)),
                "truncatedBytes": .integer(Int64(status.truncatedBytes)),
            ],
        ]
        let now = Date()
        if let oldest = status.oldestAcceptedAt, let age = report.oldestAge(now: now) {
            members["oldestAcceptedAt"] = .string(Timestamp.string(oldest))
            members["oldestAgeSeconds"] = .double((age * 1000).rounded() / 1000)
        }
        return .json(.object(members))
    }
}
