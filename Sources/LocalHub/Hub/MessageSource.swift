/// Where a message on the hub's built-in events endpoint came from: IoT Hub's
/// `iothub-message-source`. Devices send telemetry; the hub itself emits the other sources as
/// events when identities, twins or connections change.
public enum MessageSource: String, Sendable, Hashable, Codable, CaseIterable {
    /// Device-to-cloud messages (routing source `DeviceMessages`). The built-in endpoint
    /// always receives them (IoT Hub's fallback route).
    case telemetry = "Telemetry"
    /// Twin change notifications: a device's reported properties, or the service's desired
    /// properties and tags, changed.
    case twinChangeEvents
    /// A device or module identity was created or deleted.
    case deviceLifecycleEvents
    /// A device or module connected or disconnected.
    case deviceConnectionStateEvents

    /// The sources that reach the built-in endpoint only through a route of their own: in IoT
    /// Hub the fallback route carries device messages alone.
    public static let events: [MessageSource] = [
        .twinChangeEvents, .deviceLifecycleEvents, .deviceConnectionStateEvents,
    ]
}
