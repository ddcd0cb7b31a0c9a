import Foundation
import IoTHubProtocol

/// A message on the hub's built-in events endpoint (the telemetry log): a device-to-cloud
/// message as the hub received it, or an event the hub emitted (``source`` tells which).
struct TelemetryRecord: Sendable {
    var enqueuedTime: Date
    var deviceId: String
    var moduleId: String?
    var message: Message
    /// The property bag exactly as it was on the topic.
    var rawProperties: String
    /// The device sent it again (MQTT DUP flag): a redelivery after a lost acknowledgement.
    var redelivered: Bool = false
    /// `iothub-message-source`: telemetry from a device, or the kind of event.
    var source: MessageSource = .telemetry
}
