public import FoundationEssentials
public import IoTHubProtocol

/// The client's state for status reports: the connection state and since when, the last error,
/// the expiry of the SAS token the connection uses, and the kind of credential.
public struct ClientStatus: Sendable {
    /// The connection state.
    public var state: ConnectionState
    /// When the connection state last changed.
    public var since: Date
    /// The error of the last connection loss or failed connect, if there was one.
    public var lastError: IoTHubError?
    /// When the SAS token of the connection expires (nil with X.509 or before the first connect).
    public var tokenExpiry: Date?
    /// The kind of credential the client connects with.
    public var credential: CredentialKind

    public init(
        state: ConnectionState, since: Date, lastError: IoTHubError?, tokenExpiry: Date?, credential: CredentialKind
    ) {
        self.state = state
        self.since = since
        self.lastError = lastError
        self.tokenExpiry = tokenExpiry
        self.credential = credential
    }
}
