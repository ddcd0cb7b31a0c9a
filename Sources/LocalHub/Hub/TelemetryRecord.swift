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
    /// IoT Plug and Play: the component the message came from (`$.sub`, which IoT Hub turns
    /// into the system property `dt-subject`; it is then not an application property).
    var componentName: String? = nil
    /// IoT Plug and Play: the model id the device announced on its connection (IoT Hub's
    /// system property `dt-dataschema`).
    var modelId: String? = nil

    /// What a record may take in memory, as the telemetry log counts it against its byte
    /// capacity: the body, the properties twice (as sent and parsed) and the record's own
    /// allocations (about 200 bytes, measured with 100,000 small messages), all doubled because
    /// the log holds up to twice what it keeps between two compactions.
    static func memoryFootprint(bodyBytes: Int, propertyBytes: Int) -> Int {
        2 * (bodyBytes + 2 * propertyBytes + 200)
    }
}
