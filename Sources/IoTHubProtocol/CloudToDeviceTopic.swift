/// A cloud-to-device message topic: `devices/{d}/messages/devicebound/{bag}`.
public struct CloudToDeviceTopic: Sendable, Hashable {
    public var deviceId: String
    public var properties: PropertyBag

    public init(deviceId: String, properties: PropertyBag = PropertyBag()) {
        self.deviceId = deviceId
        self.properties = properties
    }

    /// The topic name.
    public var name: String {
        "devices/\(deviceId)/messages/devicebound/\(properties.encoded)"
    }

    /// Parses a cloud-to-device topic; nil for any other topic.
    public init?(parsing topic: String) {
        guard let rest = topic[...].dropping(prefix: "devices/"),
            let slash = rest.firstIndex(of: "/"),
            slash != rest.startIndex
        else { return nil }
        let tail = rest[rest.index(after: slash)...]
        let bag: Substring
        if tail == "messages/devicebound" {
            bag = ""
        } else if let afterBound = tail.dropping(prefix: "messages/devicebound/") {
            bag = afterBound
        } else {
            return nil
        }
        self.init(deviceId: String(rest[..<slash]), properties: PropertyBag(decoding: bag))
    }
}

/// A module input topic: `devices/{d}/modules/{m}/inputs/{input}/{bag}`. The input name is
/// percent-encoded in the topic.
public struct ModuleInputTopic: Sendable, Hashable {
    public var deviceId: String
    public var moduleId: String
    public var inputName: String
    public var properties: PropertyBag

    public init(deviceId: String, moduleId: String, inputName: String, properties: PropertyBag = PropertyBag()) {
        self.deviceId = deviceId
        self.moduleId = moduleId
        self.inputName = inputName
        self.properties = properties
    }

    /// The topic name.
    public var name: String {
        "devices/\(deviceId)/modules/\(moduleId)/inputs/\(PercentEncoding.encode(inputName))/\(properties.encoded)"
    }

    /// Parses a module input topic; nil for any other topic.
    public init?(parsing topic: String) {
        let parts = topic.split(separator: "/", maxSplits: 6, omittingEmptySubsequences: false)
        guard parts.count >= 6, parts[0] == "devices", parts[2] == "modules", parts[4] == "inputs",
            !parts[1].isEmpty, !parts[3].isEmpty, !parts[5].isEmpty
        else { return nil }
        self.init(
            deviceId: String(parts[1]), moduleId: String(parts[3]),
            inputName: PercentEncoding.decode(parts[5]),
            properties: PropertyBag(decoding: parts.count > 6 ? parts[6] : ""))
    }
}
