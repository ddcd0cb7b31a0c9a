import Foundation
import IoTHubProtocol

/// How an identity authenticates, as in IoT Hub's registry.
struct IdentityAuthentication: Sendable, Codable, Equatable {
    enum Kind: String, Sendable, Codable {
        case sas
        case selfSigned
        case certificateAuthority
        case none
    }

    var type: Kind
    var primaryKey: String?
    var secondaryKey: String?
    var primaryThumbprint: String?
    var secondaryThumbprint: String?

    static func newSymmetricKeys() -> IdentityAuthentication {
        IdentityAuthentication(type: .sas, primaryKey: randomKey(), secondaryKey: randomKey())
    }

    /// 32 random bytes, base64, like the keys IoT Hub generates.
    static func randomKey() -> String {
        var generator = SystemRandomNumberGenerator()
        return Data((0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }).base64EncodedString()
    }
}

/// Everything the hub keeps about one device or module identity; persisted in `state.json`.
struct IdentityRecord: Sendable, Codable {
    var key: IdentityKey
    var generationId: String
    /// Bumped on every change of the identity; rendered as an etag.
    var etagCounter: Int
    var status: String
    var statusReason: String?
    var statusUpdatedTime: Date
    var authentication: IdentityAuthentication
    var managedBy: String?
    var iotEdge: Bool
    var lastActivityTime: Date?
    var connectionStateUpdatedTime: Date?
    /// The IoT Plug and Play model id the identity announced when it last connected (the
    /// twin's `modelId`); nil when it announced none.
    var modelId: String?

    var desired: TwinProperties
    var reported: TwinProperties
    var tags: [String: JSONValue]
    /// Bumped on every change of the twin; rendered as the twin's etag and `version`.
    var twinVersion: Int

    /// Cloud-to-device queue (devices only), oldest first.
    var cloudToDevice: [QueuedCloudToDeviceMessage]
    /// MQTT subscriptions kept for `clean_session = false`, with their granted QoS.
    var subscriptions: [String: UInt8]

    init(key: IdentityKey, authentication: IdentityAuthentication, now: Date = Date()) {
        self.key = key
        self.generationId = String(UInt64.random(in: 100_000_000_000_000_000...999_999_999_999_999_999))
        self.etagCounter = 1
        self.status = "enabled"
        self.statusUpdatedTime = now
        self.authentication = authentication
        self.iotEdge = false
        self.desired = TwinProperties(version: 1)
        self.reported = TwinProperties(version: 1)
        self.tags = [:]
        self.twinVersion = 1
        self.cloudToDevice = []
        self.subscriptions = [:]
    }

    var etag: String { Self.etag(etagCounter) }
    var twinEtag: String { Self.etag(twinVersion) }

    /// IoT Hub's etags are base64 text; a counter keeps them short and ordered.
    static func etag(_ counter: Int) -> String {
        Data(String(counter).utf8).base64EncodedString()
    }

    /// The owner of this identity as IoT Hub names devices in `$.to`.
    var cloudToDeviceAddress: String { "/devices/\(key.deviceId)/messages/deviceBound" }
}
