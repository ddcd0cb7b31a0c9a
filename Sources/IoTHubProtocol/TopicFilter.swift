/// The MQTT topic filters a device subscribes to.
public enum TopicFilter {
    /// Cloud-to-device messages for a device: `devices/{d}/messages/devicebound/#`.
    public static func cloudToDevice(deviceId: String) -> String {
        "devices/\(deviceId)/messages/devicebound/#"
    }

    /// Input messages for a module: `devices/{d}/modules/{m}/inputs/#`.
    public static func moduleInputs(deviceId: String, moduleId: String) -> String {
        "devices/\(deviceId)/modules/\(moduleId)/inputs/#"
    }

    /// Direct-method requests: `$iothub/methods/POST/#`.
    public static let methodRequests = "$iothub/methods/POST/#"

    /// Answers to twin GET and PATCH requests: `$iothub/twin/res/#`.
    public static let twinResponses = "$iothub/twin/res/#"

    /// Desired-property patches: `$iothub/twin/PATCH/properties/desired/#`.
    public static let desiredPropertiesPatches = "$iothub/twin/PATCH/properties/desired/#"
}

/// Reads the `?$rid=…&$version=…` query that ends IoT Hub's twin and method topics.
enum TopicQuery {
    /// Splits `topic` at its last `/?` into the path before it and the decoded parameters after
    /// it (keys keep their `$`). Nil when there is no `/?` or a parameter has no `=`.
    static func split(_ topic: Substring) -> (path: Substring, parameters: [String: String])? {
        guard let marker = topic.utf8.ranges(of: "/?".utf8).last else { return nil }
        var parameters: [String: String] = [:]
        for pair in topic[marker.upperBound...].split(separator: "&") {
            guard let equals = pair.firstIndex(of: "=") else { return nil }
            let key = PercentEncoding.decode(pair[..<equals])
            parameters[key] = PercentEncoding.decode(pair[pair.index(after: equals)...])
        }
        return (topic[..<marker.lowerBound], parameters)
    }
}

extension Substring {
    /// Removes `prefix` and returns what follows it, or nil if `self` does not start with it.
    func dropping(prefix: String) -> Substring? {
        hasPrefix(prefix) ? dropFirst(prefix.count) : nil
    }
}
