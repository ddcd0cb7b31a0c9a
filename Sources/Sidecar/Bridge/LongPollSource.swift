import IoTHubProtocol

/// Something a long-poll waits for, as the bridge offers it: how to get ready (connect first,
/// or refuse), how to wait, and how to take back what was taken but could not be handed over
/// (the poller's connection closed). The HTTP layer's one long-poll helper drives it.
struct LongPollSource<Value: Sendable>: Sendable {
    /// Before waiting: connects when nothing is ready and the client is disconnected; throws
    /// when the poll cannot be answered at all.
    var prepare: @Sendable () async throws(IoTHubError) -> Void
    /// Waits up to the timeout for a value; nil when none came or the sidecar is shutting down.
    var wait: @Sendable (Duration) async -> Value?
    /// Takes back a value that never reached its poller: it is delivered again.
    var giveBack: @Sendable (Value) -> Void
}
