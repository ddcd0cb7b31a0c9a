import FoundationEssentials
import IoTHubDevice
import IoTHubProtocol

/// One server-sent event of `GET /events`: a name and one line of JSON.
struct SidecarEvent: Sendable, Equatable {
    var name: String
    var data: JSONValue

    /// The event as it goes on the wire (`event:`, `data:`, blank line).
    var wireFormat: String {
        "event: \(name)\ndata: \(String(decoding: data.encoded(), as: UTF8.self))\n\n"
    }

    /// A comment line that keeps an idle stream open.
    static let keepAlive = ": keep-alive\n\n"

    static func connection(_ change: ConnectionStateChange) -> SidecarEvent {
        var members: [String: JSONValue] = [
            "state": .string(change.state.rawValue), "since": .string(Timestamp.string(change.since)),
        ]
        if let reason = change.reason { members["reason"] = lastError(reason) }
        return SidecarEvent(name: "connection", data: .object(members))
    }

    static func error(_ error: IoTHubError, at time: Date = Date()) -> SidecarEvent {
        SidecarEvent(
            name: "error",
            data: [
                "code": .string(error.code), "message": .string(Self.message(of: error)),
                "time": .string(Timestamp.string(time)),
            ])
    }

    /// Every property of the message, as in the JSON of `GET /inbox` (not its body).
    static func message(_ message: Message, queued: Int) -> SidecarEvent {
        var members = ReceivedMessageJSON.propertyMembers(of: message)
        members["queued"] = .integer(Int64(queued))
        members["size"] = .integer(Int64(message.payload.count))
        return SidecarEvent(name: "message", data: .object(members))
    }

    static func desired(patch: JSONValue, version: Int) -> SidecarEvent {
        SidecarEvent(name: "desired", data: ["patch": patch, "version": .integer(Int64(version))])
    }

    static func method(_ request: MethodRequest) -> SidecarEvent {
        SidecarEvent(name: "method", data: MethodRequestJSON.json(request))
    }

    static func sasToken(expiry: Date) -> SidecarEvent {
        SidecarEvent(name: "sastoken", data: ["tokenExpiry": .string(Timestamp.string(expiry))])
    }

    /// The outbox filled, emptied, dropped or expired messages; with its figures now.
    static func outbox(_ event: OutboxEvent, status: OutboxStatus, at time: Date = Date()) -> SidecarEvent {
        var members: [String: JSONValue] = [
            "messages": .integer(Int64(status.messages)), "bytes": .integer(Int64(status.bytes)),
            "full": .bool(status.isFull),
            "dropped": .integer(Int64(status.dropped)), "expired": .integer(Int64(status.expired)),
            "time": .string(Timestamp.string(time)),
        ]
        switch event {
        case .full: members["kind"] = "full"
        case .emptied: members["kind"] = "emptied"
        case .dropped(let count):
            members["kind"] = "dropped"
            members["count"] = .integer(Int64(count))
        case .expired(let count):
            members["kind"] = "expired"
            members["count"] = .integer(Int64(count))
        }
        return SidecarEvent(name: "outbox", data: .object(members))
    }

    /// `{code, message}` of an error (the `LastError` schema).
    static func lastError(_ error: IoTHubError) -> JSONValue {
        ["code": .string(error.code), "message": .string(message(of: error))]
    }

    /// An error's explanation without its leading code.
    static func message(of error: IoTHubError) -> String {
        error.description.drop { $0 != ":" }.dropFirst().trimmingWhitespace()
    }
}
