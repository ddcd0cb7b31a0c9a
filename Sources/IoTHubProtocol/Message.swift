public import FoundationEssentials

/// A device-to-cloud or cloud-to-device message: a payload plus IoT Hub's system properties and
/// the application's own properties.
public struct Message: Sendable, Hashable {
    /// IoT Hub's limit for one message: body plus property names and values.
    public static let maximumSize = 262_144

    /// The body, as opaque bytes.
    public var payload: Data
    /// `$.mid`: an id the sender chooses.
    public var messageId: String?
    /// `$.cid`: the id of the message this one answers.
    public var correlationId: String?
    /// `$.uid`: the user id.
    public var userId: String?
    /// `$.ct`: the payload's media type, e.g. `application/json`. IoT Hub message routing
    /// only reads JSON bodies when this and ``contentEncoding`` are set.
    public var contentType: String?
    /// `$.ce`: the payload's character encoding, e.g. `utf-8`.
    public var contentEncoding: String?
    /// `$.exp`: expiry as an ISO 8601 UTC time.
    public var expiryTimeUTC: String?
    /// `$.on`: the output a module sends on.
    public var outputName: String?
    /// `$.ifid`: the interface id (used by security agent messages); see
    /// ``setAsSecurityMessage()``.
    public var interfaceId: String?
    /// Application properties. Keys are unique; they travel sorted.
    public var properties: [String: String]

    /// `$.to`: the address of a cloud-to-device message (set by the hub).
    public var to: String?
    /// `iothub-ack`: the delivery feedback the sender asked for (set by the hub).
    public var ack: String?
    /// The input a module received the message on (set by the hub).
    public var inputName: String?

    public init(
        payload: Data = Data(), messageId: String? = nil, correlationId: String? = nil,
        userId: String? = nil, contentType: String? = nil, contentEncoding: String? = nil,
        expiryTimeUTC: String? = nil, outputName: String? = nil, interfaceId: String? = nil,
        properties: [String: String] = [:], to: String? = nil, ack: String? = nil,
        inputName: String? = nil
    ) {
        self.payload = payload
        self.messageId = messageId
        self.correlationId = correlationId
        self.userId = userId
        self.contentType = contentType
        self.contentEncoding = contentEncoding
        self.expiryTimeUTC = expiryTimeUTC
        self.outputName = outputName
        self.interfaceId = interfaceId
        self.properties = properties
        self.to = to
        self.ack = ack
        self.inputName = inputName
    }

    /// The system properties a device sends, in the order Microsoft's SDKs put them on the topic.
    var outgoingSystemProperties: [(key: String, value: String?)] {
        [
            (SystemPropertyKey.outputName, outputName),
            (SystemPropertyKey.messageId, messageId),
            (SystemPropertyKey.correlationId, correlationId),
            (SystemPropertyKey.userId, userId),
            (SystemPropertyKey.contentType, contentType),
            (SystemPropertyKey.contentEncoding, contentEncoding),
            (SystemPropertyKey.interfaceId, interfaceId),
            (SystemPropertyKey.expiryTimeUTC, expiryTimeUTC),
        ]
    }

    /// The system properties the hub sets on cloud-to-device messages, in its order.
    var incomingSystemProperties: [(key: String, value: String?)] {
        [
            (SystemPropertyKey.messageId, messageId),
            (SystemPropertyKey.to, to),
            (SystemPropertyKey.correlationId, correlationId),
            (SystemPropertyKey.userId, userId),
            (SystemPropertyKey.contentType, contentType),
            (SystemPropertyKey.contentEncoding, contentEncoding),
            (SystemPropertyKey.expiryTimeUTC, expiryTimeUTC),
            (SystemPropertyKey.ack, ack),
        ]
    }

    /// The property bag for a device-to-cloud topic: system properties in the SDKs' order, then
    /// application properties sorted by key (code point order).
    public var telemetryPropertyBag: PropertyBag {
        bag(systemProperties: outgoingSystemProperties)
    }

    /// The property bag the hub puts on a cloud-to-device topic.
    public var cloudToDevicePropertyBag: PropertyBag {
        bag(systemProperties: incomingSystemProperties)
    }

    private func bag(systemProperties: [(key: String, value: String?)]) -> PropertyBag {
        var bag = PropertyBag()
        for (key, value) in systemProperties {
            // Like the reference SDK, an empty system property is not sent.
            if let value, !value.isEmpty { bag.append(key, value) }
        }
        for (key, value) in properties.sorted(by: { Self.codePointOrder($0.key, $1.key) }) {
            bag.append(key, value)
        }
        return bag
    }

    /// Rebuilds a message from a payload and a received property bag. Unknown `$.`-keys and
    /// everything else become application properties, as in the reference SDK.
    public init(payload: Data, propertyBag: PropertyBag, inputName: String? = nil) {
        self.init(payload: payload, inputName: inputName)
        for entry in propertyBag.entries {
            switch entry.key {
            case SystemPropertyKey.messageId: messageId = entry.value
            case SystemPropertyKey.correlationId: correlationId = entry.value
            case SystemPropertyKey.userId: userId = entry.value
            case SystemPropertyKey.contentType: contentType = entry.value
            case SystemPropertyKey.contentEncoding: contentEncoding = entry.value
            case SystemPropertyKey.expiryTimeUTC: expiryTimeUTC = entry.value
            case SystemPropertyKey.outputName: outputName = entry.value
            case SystemPropertyKey.interfaceId: interfaceId = entry.value
            case SystemPropertyKey.to: to = entry.value
            case SystemPropertyKey.ack: ack = entry.value
            default: properties[entry.key] = entry.value ?? ""
            }
        }
    }

    /// The size IoT Hub charges against ``maximumSize``: the body, plus the UTF-8 length of every
    /// system property value, plus the names and values of the application properties.
    public var size: Int {
        // The values of outgoingSystemProperties, without building that array: this runs for
        // every message sent or accepted.
        func length(_ value: String?) -> Int { value?.utf8.count ?? 0 }
        var total = payload.count + length(outputName) + length(messageId) + length(correlationId) + length(userId)
        total += length(contentType) + length(contentEncoding) + length(interfaceId) + length(expiryTimeUTC)
        for (key, value) in properties {
            total += key.utf8.count + value.utf8.count
        }
        return total
    }

    /// Throws ``IoTHubError/messageTooLarge(size:limit:)`` when ``size`` exceeds ``maximumSize``.
    public func validateSize() throws(IoTHubError) {
        let size = self.size
        if size > Self.maximumSize {
            throw .messageTooLarge(size: size, limit: Self.maximumSize)
        }
    }

    /// Orders strings by Unicode code point, the order Python's `sort()` gives, so the topic is
    /// the same whichever SDK built it.
    static func codePointOrder(_ lhs: String, _ rhs: String) -> Bool {
        lhs.unicodeScalars.lexicographicallyPrecedes(rhs.unicodeScalars)
    }
}

extension Message {
    /// The interface id that makes a message a security message: IoT Hub hands such messages
    /// to its security service (Microsoft Defender for IoT) as well as routing them.
    public static let securityMessageInterfaceId = "urn:azureiot:Security:SecurityAgent:1"

    /// Marks the message as a security message (the Python SDK's `set_as_security_message`):
    /// sets ``interfaceId`` (`$.ifid`) to ``securityMessageInterfaceId``.
    public mutating func setAsSecurityMessage() {
        interfaceId = Self.securityMessageInterfaceId
    }

    /// The IoT Plug and Play component a telemetry message comes from: the application
    /// property `$.sub` (``PlugAndPlay/componentNameProperty``), as the Python SDK's Plug and
    /// Play samples set it in `custom_properties`; IoT Hub records it as `dt-subject`. Nil for
    /// the root component.
    public var componentName: String? {
        get { properties[PlugAndPlay.componentNameProperty] }
        set { properties[PlugAndPlay.componentNameProperty] = newValue }
    }

    /// Whether ``interfaceId`` marks the message as a security message.
    public var isSecurityMessage: Bool {
        interfaceId == Self.securityMessageInterfaceId
    }

    /// ``expiryTimeUTC`` as a date (ISO 8601, with or without fractional seconds); nil when it
    /// is absent or not such a time.
    public var expiryDate: Date? {
        guard let text = expiryTimeUTC else { return nil }
        if let date = try? Date(text, strategy: .iso8601) { return date }
        return try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }
}
