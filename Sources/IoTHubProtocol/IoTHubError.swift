/// Every error the IoT Hub client, the sidecar and the local hub report.
///
/// The cases carry the names of the exception classes of Microsoft's Python device SDK
/// (`azure.iot.device.exceptions`), so a failure reads the same in every language; ``code``
/// returns that name, and the sidecar puts it in the `code` member of its problem documents.
public enum IoTHubError: Error, Sendable, Hashable {
    /// The hub refused the credentials (CONNACK 4 or 5, HTTP 401).
    case credentialError(String)
    /// The hub could not be reached, or the TLS or MQTT handshake failed.
    case connectionFailedError(String)
    /// The connection was lost while the operation was under way.
    case connectionDroppedError(String)
    /// The client is not connected and is not allowed to connect on its own.
    case noConnectionError(String)
    /// No answer came in time.
    case operationTimeout(String)
    /// The operation was cancelled by `disconnect` or `shutdown`.
    case operationCancelled(String)
    /// The hub answered with an error status (a twin 4xx/5xx, 429 throttling, …).
    /// `retryAfterSeconds` is the hub's `Retry-After`, when it gave one.
    case serviceError(status: Int, message: String, retryAfterSeconds: Int? = nil)
    /// Anything else that went wrong on the client side.
    case clientError(String)
    /// An argument was rejected before anything was sent (the Python SDK's `ValueError`).
    /// `field` names what was wrong: a connection-string key, a SAS token field, a property.
    case valueError(field: String?, reason: String)
    /// A message is larger than IoT Hub accepts (the Python SDK raises `ValueError` for it).
    case messageTooLarge(size: Int, limit: Int)
    /// A message's properties make its MQTT topic longer than MQTT can carry (`length` and
    /// `limit` in UTF-8 bytes), although the message is within ``messageTooLarge(size:limit:)``.
    case topicTooLong(length: Int, limit: Int)

    /// The name of the Python SDK's exception class for this error.
    public var code: String {
        switch self {
        case .credentialError: "CredentialError"
        case .connectionFailedError: "ConnectionFailedError"
        case .connectionDroppedError: "ConnectionDroppedError"
        case .noConnectionError: "NoConnectionError"
        case .operationTimeout: "OperationTimeout"
        case .operationCancelled: "OperationCancelled"
        case .serviceError: "ServiceError"
        case .clientError: "ClientError"
        case .valueError, .messageTooLarge, .topicTooLong: "ValueError"
        }
    }

    /// Whether trying the same operation again later can succeed without the caller changing
    /// anything (lost or unreachable connection, timeout, throttling or a 5xx from the hub).
    public var isTransient: Bool {
        switch self {
        case .connectionFailedError, .connectionDroppedError, .operationTimeout:
            true
        case .serviceError(let status, _, _):
            status == 429 || status >= 500
        case .credentialError, .noConnectionError, .operationCancelled, .clientError, .valueError,
            .messageTooLarge, .topicTooLong:
            false
        }
    }
}

extension IoTHubError: CustomStringConvertible {
    /// `Code: explanation`, one line, never containing a secret.
    public var description: String {
        switch self {
        case .credentialError(let detail), .connectionFailedError(let detail),
            .connectionDroppedError(let detail), .noConnectionError(let detail),
            .operationTimeout(let detail), .operationCancelled(let detail), .clientError(let detail):
            return "\(code): \(detail)"
        case .serviceError(let status, let message, _):
            return "\(code): the hub answered \(status): \(message)"
        case .valueError(let field?, let reason):
            return "\(code): \(field) \(reason)"
        case .valueError(nil, let reason):
            return "\(code): \(reason)"
        case .messageTooLarge(let size, let limit):
            return "\(code): the message is \(size) bytes; IoT Hub accepts at most \(limit)"
        case .topicTooLong(let length, let limit):
            return "\(code): the message's properties make an MQTT topic of \(length) bytes; at most \(limit) fit"
        }
    }
}
