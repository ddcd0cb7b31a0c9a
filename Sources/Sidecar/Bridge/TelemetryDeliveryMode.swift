/// How `POST /messages` answers a request without `Prefer: respond-async`
/// (`--telemetry-delivery`).
public enum TelemetryDeliveryMode: String, Sendable, CaseIterable {
    /// 200 once the hub acknowledged the message (504 if it does not in time).
    case sync
    /// 202 once the message is on disk in the outbox; the outbox delivers it.
    case async
}
