import Foundation
import IoTHubProtocol

/// A cloud-to-device message waiting in a device's queue.
struct QueuedCloudToDeviceMessage: Sendable, Codable, Equatable {
    /// IoT Hub's lock token: unique per message.
    var lockToken: String
    var payload: Data
    /// System and application properties, in bag order (`$.mid`, `$.to`, …, `iothub-ack`, app properties).
    var properties: [StoredProperty]
    var enqueuedTime: Date
    var expiryTime: Date
    var deliveryCount: Int
}

/// A property of a stored message (`PropertyBag.Entry` in a Codable form).
struct StoredProperty: Sendable, Codable, Equatable {
    var key: String
    var value: String?

    init(_ entry: PropertyBag.Entry) {
        key = entry.key
        value = entry.value
    }

    var entry: PropertyBag.Entry { PropertyBag.Entry(key: key, value: value) }
}
