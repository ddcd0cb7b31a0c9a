/// A device-to-cloud telemetry topic: `devices/{d}/messages/events/{bag}`, or for a module
/// `devices/{d}/modules/{m}/messages/events/{bag}`.
public struct TelemetryTopic: Sendable, Hashable {
    /// The longest topic MQTT can carry: a topic goes with a 16-bit length of its UTF-8 bytes.
    public static let maximumNameLength = 65_535

    public var deviceId: String
    public var moduleId: String?
    public var properties: PropertyBag

    public init(deviceId: String, moduleId: String? = nil, properties: PropertyBag = PropertyBag()) {
        self.deviceId = deviceId
        self.moduleId = moduleId
        self.properties = properties
    }

    /// The topic for sending `message` as `deviceId` (and `moduleId`).
    public init(deviceId: String, moduleId: String? = nil, message: Message) {
        self.init(deviceId: deviceId, moduleId: moduleId, properties: message.telemetryPropertyBag)
    }

    /// The topic name.
    public var name: String {
        // Built as bytes and made a string once: appending to a String checks and copies each
        // piece (docs/PERFORMANCE.md, "Work per request").
        var topic: [UInt8] = []
        topic.reserveCapacity(34 + deviceId.utf8.count + (moduleId?.utf8.count ?? 0) + properties.encodedLengthBound)
        topic += "devices/".utf8
        topic += deviceId.utf8
        if let moduleId {
            topic += "/modules/".utf8
            topic += moduleId.utf8
        }
        topic += "/messages/events/".utf8
        properties.encode(appendingTo: &topic)
        return String(decoding: topic, as: UTF8.self)
    }

    /// ``name``, or ``IoTHubError/topicTooLong(length:limit:)`` when the properties make it
    /// longer than ``maximumNameLength`` (a message within IoT Hub's size limit can: each
    /// property byte outside `A–Z a–z 0–9 - . _ ~` takes three bytes on the topic).
    public func validatedName() throws(IoTHubError) -> String {
        let name = self.name
        let length = name.utf8.count
        guard length <= Self.maximumNameLength else {
            throw .topicTooLong(length: length, limit: Self.maximumNameLength)
        }
        return name
    }

    /// An upper bound of the length of the topic `message` goes on, from lengths alone, without
    /// building it: every property byte counted as percent-encoded. When it is within
    /// ``maximumNameLength``, the topic is too (cheaper than building it to measure it).
    public static func nameLengthBound(deviceId: String, moduleId: String?, message: Message) -> Int {
        // `devices/`, `/modules/`, `/messages/events/`: 34 bytes; a system property key is at
        // most 6 bytes (18 encoded), and each property adds `=` and `&`.
        let fixed = 34 + deviceId.utf8.count + (moduleId?.utf8.count ?? 0)
        let propertyBytes = message.size - message.payload.count
        return fixed + 3 * propertyBytes + 8 * (18 + 2) + 2 * message.properties.count
    }

    /// Parses a telemetry topic; nil for any other topic. The trailing `/` and the bag may be
    /// absent, as some SDKs send `devices/{d}/messages/events`.
    public init?(parsing topic: String) {
        guard let rest = topic[...].dropping(prefix: "devices/"),
            let slash = rest.firstIndex(of: "/")
        else { return nil }
        let deviceId = rest[..<slash]
        var tail = rest[rest.index(after: slash)...]
        var moduleId: Substring?
        if let afterModules = tail.dropping(prefix: "modules/") {
            guard let moduleSlash = afterModules.firstIndex(of: "/") else { return nil }
            moduleId = afterModules[..<moduleSlash]
            tail = afterModules[afterModules.index(after: moduleSlash)...]
        }
        let bag: Substring
        if tail == "messages/events" {
            bag = ""
        } else if let afterEvents = tail.dropping(prefix: "messages/events/") {
            bag = afterEvents
        } else {
            return nil
        }
        guard !deviceId.isEmpty, moduleId?.isEmpty != true else { return nil }
        self.init(
            deviceId: String(deviceId), moduleId: moduleId.map(String.init),
            properties: PropertyBag(decoding: bag))
    }
}
