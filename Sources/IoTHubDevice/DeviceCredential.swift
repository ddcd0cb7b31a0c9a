public import IoTHubProtocol

/// How a device or module proves its identity to the hub.
public enum DeviceCredential: Sendable {
    /// A shared access key (base64): the client signs and renews its own SAS tokens.
    case symmetricKey(String)
    /// A SAS token supplied by the user; the client cannot renew it and asks for a new one
    /// (``IoTHubDeviceClient/newSASTokenRequired()``) before it expires.
    case sasToken(SASToken)
    /// An X.509 certificate and key presented in the TLS handshake.
    case x509(X509Credential)
    /// An IoT Edge module's key, held by the IoT Edge security daemon: the client has each SAS
    /// token signed by the workload API, and renews it the same way.
    case edgeWorkload(EdgeWorkload)

    /// Which of the three kinds of credential this is, for status reports.
    public var kind: CredentialKind {
        switch self {
        case .symmetricKey: .symmetricKey
        case .sasToken: .sasToken
        case .x509: .x509
        case .edgeWorkload: .edgeWorkload
        }
    }
}

/// The kind of a ``DeviceCredential``; its raw value names it in status reports.
public enum CredentialKind: String, Sendable, Hashable, Codable {
    /// A shared access key: the client signs and renews its own SAS tokens.
    case symmetricKey
    /// A SAS token the application supplies (and replaces before it expires).
    case sasToken
    /// An X.509 certificate and key.
    case x509
    /// An IoT Edge module's key, used through the workload API (tokens signed and renewed there).
    case edgeWorkload
}
