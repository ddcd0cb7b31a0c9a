/// Why LocalHub could not start or keep its state.
public enum LocalHubError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The data directory or a file in it could not be read or written, or holds garbage.
    case dataDirectory(String)
    /// A listener could not be opened (port in use, permission denied, bad address).
    case listen(String)
    /// A configuration value is invalid.
    case configuration(String)

    public var description: String {
        switch self {
        case .dataDirectory(let detail): "data directory: \(detail)"
        case .listen(let detail): "listen: \(detail)"
        case .configuration(let detail): "configuration: \(detail)"
        }
    }
}
