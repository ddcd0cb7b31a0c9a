public import IoTHubProtocol

/// A proxy every connection to the hub goes through (the Python SDK's `proxy_options`): MQTT (over TCP
/// or WebSockets) and the HTTPS requests of file upload.
public struct ProxyOptions: Sendable, Hashable, CustomStringConvertible {
    /// The proxy protocol (the Python SDK's `proxy_type`).
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        /// An HTTP proxy that opens tunnels with `CONNECT host:port`.
        case http
        /// SOCKS version 4 (the device resolves the hub's name itself).
        case socks4
        /// SOCKS version 5 (the proxy resolves the hub's name), optionally with a user name and
        /// password.
        case socks5

        /// How people name it: "HTTP", "SOCKS4", "SOCKS5".
        public var displayName: String { rawValue.uppercased() }
    }

    /// `proxy_type`.
    public var kind: Kind
    /// `proxy_addr`: host name or IP address of the proxy.
    public var address: String
    /// `proxy_port`.
    public var port: Int
    /// `proxy_username`: sent as HTTP basic authentication, as the SOCKS4 user id, or for SOCKS5
    /// user name/password authentication.
    public var username: String?
    /// `proxy_password`. Never part of ``description``.
    public var password: String?

    /// The port a proxy URL without one means (curl's default).
    public static let defaultPort = 1080

    public init(kind: Kind, address: String, port: Int, username: String? = nil, password: String? = nil) {
        self.kind = kind
        self.address = address
        self.port = port
        self.username = username
        self.password = password
    }

    /// Reads `http://[user[:password]@]host[:port]`, `socks4://…` or `socks5://…` (also
    /// `socks5h://`, which means the same here: the proxy always resolves the hub's name).
    /// User name and password may be percent-encoded; the port defaults to 1080. Errors never
    /// repeat a part of the URL: a password in the wrong place must not reach a log.
    public init(url text: String) throws(IoTHubError) {
        guard let schemeEnd = text.utf8.firstRange(of: "://".utf8) else {
            throw .valueError(
                field: "proxy", reason: "must be a URL such as http://proxy.example:3128 or socks5://10.0.0.1:1080")
        }
        let scheme = text[..<schemeEnd.lowerBound].lowercased()
        switch scheme {
        case "http": kind = .http
        case "socks4", "socks4a": kind = .socks4
        case "socks5", "socks5h": kind = .socks5
        default:
            throw .valueError(field: "proxy", reason: "the scheme is not one of http, socks4, socks5")
        }
        var rest = text[schemeEnd.upperBound...]
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.contains("/"), !rest.contains("?"), !rest.contains("#") else {
            throw .valueError(field: "proxy", reason: "a proxy URL has no path, query or fragment")
        }
        var hostPart = rest
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            hostPart = rest[rest.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                username = PercentEncoding.decode(userInfo[..<colon])
                password = PercentEncoding.decode(userInfo[userInfo.index(after: colon)...])
            } else {
                username = PercentEncoding.decode(userInfo)
            }
            if username?.isEmpty == true { username = nil }
        }
        // "[::1]:3128", "host:3128", "host".
        var host = hostPart
        var portText: Substring?
        if hostPart.hasPrefix("[") {
            guard let close = hostPart.firstIndex(of: "]") else {
                throw .valueError(field: "proxy", reason: "the IPv6 address is missing its ']'")
            }
            host = hostPart[hostPart.index(after: hostPart.startIndex)..<close]
            let after = hostPart[hostPart.index(after: close)...]
            if after.hasPrefix(":") {
                portText = after.dropFirst()
            } else if !after.isEmpty {
                throw .valueError(field: "proxy", reason: "unexpected text after the IPv6 address")
            }
        } else if let colon = hostPart.lastIndex(of: ":") {
            host = hostPart[..<colon]
            portText = hostPart[hostPart.index(after: colon)...]
        }
        guard !host.isEmpty else { throw .valueError(field: "proxy", reason: "names no host") }
        address = String(host)
        if let portText {
            guard let number = Int(portText), (1...65535).contains(number) else {
                throw .valueError(field: "proxy", reason: "the port is not a number from 1 to 65535")
            }
            port = number
        } else {
            port = Self.defaultPort
        }
    }

    /// `socks5://user@host:1080`: the URL without the password, fit for logs.
    public var description: String {
        let user = username.map { PercentEncoding.encode($0) + "@" } ?? ""
        let host = address.contains(":") ? "[\(address)]" : address
        return "\(kind.rawValue)://\(user)\(host):\(port)"
    }

    /// "HTTP proxy proxy.example:3128", for error messages.
    var name: String {
        let host = address.contains(":") ? "[\(address)]" : address
        return "\(kind.displayName) proxy \(host):\(port)"
    }

    /// Checks the values; the client configuration calls it.
    func validate() throws(IoTHubError) {
        guard !address.isEmpty, !address.contains("/") else {
            throw .valueError(field: "proxy_addr", reason: "is not a host name")
        }
        guard (1...65535).contains(port) else {
            throw .valueError(field: "proxy_port", reason: "must be from 1 to 65535")
        }
        if kind == .socks5 {
            // RFC 1929 carries each in one length byte.
            if let username, username.utf8.count > 255 {
                throw .valueError(field: "proxy_username", reason: "is longer than 255 bytes")
            }
            if let password, password.utf8.count > 255 {
                throw .valueError(field: "proxy_password", reason: "is longer than 255 bytes")
            }
            if password != nil, username == nil {
                throw .valueError(field: "proxy_username", reason: "is needed with a password")
            }
        }
        if kind == .socks4, password != nil {
            throw .valueError(field: "proxy_password", reason: "SOCKS4 has no passwords (only a user id)")
        }
    }
}
