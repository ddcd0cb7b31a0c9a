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

    /// `sas` (either SAS form) or `x509`, for status reports.
    public var kind: String {
        switch self {
        case .symmetricKey: "symmetricKey"
        case .sasToken: "sasToken"
        case .x509: "x509"
        }
    }
}
