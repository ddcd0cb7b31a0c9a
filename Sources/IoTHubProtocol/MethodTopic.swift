/// A direct-method request the hub sends: `$iothub/methods/POST/{method name}/?$rid={rid}`.
/// The body is the method's JSON payload.
public struct MethodRequestTopic: Sendable, Hashable {
    public var methodName: String
    public var requestId: String

    public init(methodName: String, requestId: String) {
        self.methodName = methodName
        self.requestId = requestId
    }

    /// The topic name; the method name is percent-encoded.
    public var name: String {
        "$iothub/methods/POST/\(PercentEncoding.encode(methodName))/?$rid=\(PercentEncoding.encode(requestId))"
    }

    /// Parses a method request topic; nil for any other topic.
    public init?(parsing topic: String) {
        guard let rest = topic[...].dropping(prefix: "$iothub/methods/POST/"),
            let (path, parameters) = TopicQuery.split(rest),
            !path.isEmpty, !path.contains("/"),
            let requestId = parameters["$rid"], !requestId.isEmpty
        else { return nil }
        self.init(methodName: PercentEncoding.decode(path), requestId: requestId)
    }
}

/// A device's answer to a direct method: `$iothub/methods/res/{status}/?$rid={rid}`.
/// The body is the response's JSON payload.
public struct MethodResponseTopic: Sendable, Hashable {
    public var status: Int
    public var requestId: String

    public init(status: Int, requestId: String) {
        self.status = status
        self.requestId = requestId
    }

    /// The topic name.
    public var name: String {
        "$iothub/methods/res/\(status)/?$rid=\(PercentEncoding.encode(requestId))"
    }

    /// Parses a method response topic; nil for any other topic.
    public init?(parsing topic: String) {
        guard let rest = topic[...].dropping(prefix: "$iothub/methods/res/"),
            let (path, parameters) = TopicQuery.split(rest),
            let status = Int(path),
            let requestId = parameters["$rid"], !requestId.isEmpty
        else { return nil }
        self.init(status: status, requestId: requestId)
    }
}
