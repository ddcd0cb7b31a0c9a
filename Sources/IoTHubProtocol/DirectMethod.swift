public import FoundationEssentials

/// A direct-method call the hub delivered to the device.
public struct MethodRequest: Sendable, Hashable {
    /// The hub's request id; the response must carry it back.
    public var requestId: String
    /// The method's name.
    public var name: String
    /// The payload as the caller sent it (JSON text, possibly `null`).
    public var payload: Data

    public init(requestId: String, name: String, payload: Data) {
        self.requestId = requestId
        self.name = name
        self.payload = payload
    }

    /// Rebuilds a request from the topic and body of the hub's publish; nil for another topic.
    public init?(topic: String, payload: Data) {
        guard let parsed = MethodRequestTopic(parsing: topic) else { return nil }
        self.init(requestId: parsed.requestId, name: parsed.methodName, payload: payload)
    }
}

/// A device's answer to a ``MethodRequest``.
public struct MethodResponse: Sendable, Hashable {
    public var requestId: String
    /// The status the caller sees, chosen by the device (200 for success by convention).
    public var status: Int
    /// The JSON payload returned to the caller.
    public var payload: Data

    public init(requestId: String, status: Int, payload: Data = Data("null".utf8)) {
        self.requestId = requestId
        self.status = status
        self.payload = payload
    }

    /// Answers `request` with `status` and `payload`.
    public init(answering request: MethodRequest, status: Int, payload: Data = Data("null".utf8)) {
        self.init(requestId: request.requestId, status: status, payload: payload)
    }

    /// The topic to publish the response to.
    public var topic: MethodResponseTopic {
        MethodResponseTopic(status: status, requestId: requestId)
    }
}
