import FoundationEssentials
import IoTHubDevice

/// The outbox's figures with its settings (`GET /outbox`, the `iothub_sidecar_outbox_…` metrics).
struct OutboxReport: Sendable {
    var status: OutboxStatus
    var configuration: OutboxConfiguration
    var defaultDelivery: TelemetryDeliveryMode

    /// Seconds the oldest waiting message has waited; nil when none waits.
    func oldestAge(now: Date) -> Double? {
        status.oldestAcceptedAt.map { max(0, now.timeIntervalSince($0)) }
    }
}
