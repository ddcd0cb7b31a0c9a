import Foundation
import IoTHubProtocol

/// A device-to-cloud message as the hub received it.
struct TelemetryRecord: Sendable {
    var enqueuedTime: Date
    var deviceId: String
    var moduleId: String?
    var message: Message
    /// The property bag exactly as it was on the topic.
    var rawProperties: String
    /// The device sent it again (MQTT DUP flag): a redelivery after a lost acknowledgement.
    var redelivered: Bool = false
}
