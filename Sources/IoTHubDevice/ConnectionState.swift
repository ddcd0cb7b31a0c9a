public import FoundationEssentials
public import IoTHubProtocol

/// The client's connection as applications see it.
public enum ConnectionState: String, Sendable, Codable {
    /// Not connected, and not trying to.
    case disconnected
    /// Connecting at the application's request (or on first use with auto-connect).
    case connecting
    /// Connected to the hub.
    case connected
    /// The connection was lost or is being renewed; the client is reconnecting.
    case reconnecting
}

/// A change of ``ConnectionState``, with its time and cause.
public struct ConnectionStateChange: Sendable {
    public var state: ConnectionState
    public var since: Date
    /// Why the connection was lost, when it was.
    public var reason: IoTHubError?

    public init(state: ConnectionState, since: Date, reason: IoTHubError? = nil) {
        self.state = state
        self.since = since
        self.reason = reason
    }
}
