/// A twin request a device publishes: GET the twin, or PATCH its reported properties.
///
/// `$iothub/twin/GET/?$rid={rid}` and `$iothub/twin/PATCH/properties/reported/?$rid={rid}`.
public struct TwinRequestTopic: Sendable, Hashable {
    public enum Operation: Sendable, Hashable {
        /// Read the whole twin; the body is ignored (the Python SDK sends a single space).
        case get
        /// Merge the body (JSON) into the reported properties.
        case patchReportedProperties
    }

    public var operation: Operation
    public var requestId: String

    public init(_ operation: Operation, requestId: String) {
        self.operation = operation
        self.requestId = requestId
    }

    /// The topic name.
    public var name: String {
        let rid = PercentEncoding.encode(requestId)
        switch operation {
        case .get: return "$iothub/twin/GET/?$rid=\(rid)"
        case .patchReportedProperties: return "$iothub/twin/PATCH/properties/reported/?$rid=\(rid)"
        }
    }

    /// Parses a twin request topic; nil for any other topic or a missing `$rid`.
    public init?(parsing topic: String) {
        guard let rest = topic[...].dropping(prefix: "$iothub/twin/"),
            let (path, parameters) = TopicQuery.split(rest),
            let requestId = parameters["$rid"], !requestId.isEmpty
        else { return nil }
        switch path {
        case "GET": self.init(.get, requestId: requestId)
        case "PATCH/properties/reported": self.init(.patchReportedProperties, requestId: requestId)
        default: return nil
        }
    }
}

/// The hub's answer to a twin request: `$iothub/twin/res/{status}/?$rid={rid}[&$version={v}]`.
/// A GET is answered 200 with the twin; a reported PATCH 204 with the new reported version.
public struct TwinResponseTopic: Sendable, Hashable {
    public var status: Int
    public var requestId: String
    public var version: Int?

    public init(status: Int, requestId: String, version: Int? = nil) {
        self.status = status
        self.requestId = requestId
        self.version = version
    }

    /// The topic name.
    public var name: String {
        var topic = "$iothub/twin/res/\(status)/?$rid=\(PercentEncoding.encode(requestId))"
        if let version { topic += "&$version=\(version)" }
        return topic
    }

    /// Parses a twin response topic; nil for any other topic.
    public init?(parsing topic: String) {
        guard let rest = topic[...].dropping(prefix: "$iothub/twin/res/"),
            let (path, parameters) = TopicQuery.split(rest),
            let status = Int(path),
            let requestId = parameters["$rid"], !requestId.isEmpty
        else { return nil }
        var version: Int?
        if let text = parameters["$version"] {
            guard let value = Int(text) else { return nil }
            version = value
        }
        self.init(status: status, requestId: requestId, version: version)
    }
}

/// A desired-properties patch the hub pushes: `$iothub/twin/PATCH/properties/desired/?$version={v}`.
/// The body is the patch as JSON, `$version` included.
public struct DesiredPropertiesPatchTopic: Sendable, Hashable {
    public var version: Int

    public init(version: Int) {
        self.version = version
    }

    /// The topic name.
    public var name: String {
        "$iothub/twin/PATCH/properties/desired/?$version=\(version)"
    }

    /// Parses a desired-properties patch topic; nil for any other topic.
    public init?(parsing topic: String) {
        guard let rest = topic[...].dropping(prefix: "$iothub/twin/PATCH/properties/"),
            let (path, parameters) = TopicQuery.split(rest),
            path == "desired",
            let text = parameters["$version"], let version = Int(text)
        else { return nil }
        self.init(version: version)
    }
}
