import Hummingbird
public import IoTHubProtocol

/// Where the sidecar listens: a TCP address (`127.0.0.1:8080`) or a unix socket
/// (`unix:/run/iothub/sidecar.sock`).
public enum ListenAddress: Sendable, Equatable, CustomStringConvertible {
    case tcp(host: String, port: Int)
    case unix(path: String)

    /// Parses `host:port`, `[v6]:port`, `:port` (loopback) or `unix:/path`.
    public init(parsing text: String) throws(IoTHubError) {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard !path.isEmpty else { throw .valueError(field: "--listen", reason: "unix: needs a socket path") }
            self = .unix(path: path)
            return
        }
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else {
            throw .valueError(
                field: "--listen", reason: "must be HOST:PORT (such as 127.0.0.1:8080) or unix:/path/to.sock")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self = .tcp(host: host.isEmpty ? "127.0.0.1" : host, port: port)
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): host.contains(":") ? "http://[\(host)]:\(port)" : "http://\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }

    var bindAddress: BindAddress {
        switch self {
        case .tcp(let host, let port): .hostname(host, port: port)
        case .unix(let path): .unixDomainSocket(path: path)
        }
    }
}
