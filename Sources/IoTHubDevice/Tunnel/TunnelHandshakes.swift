internal import COpenSSL
import FoundationEssentials
import Glibc
import IoTHubProtocol

/// Why a tunnel could not be opened, in words for the person reading the error.
struct TunnelFailure: Error, Equatable, CustomStringConvertible {
    var description: String

    init(_ description: String) {
        self.description = description
    }
}

/// What a handshake wants next after it looked at the bytes received so far.
enum HandshakeStep: Equatable {
    /// Not enough bytes yet; nothing was consumed.
    case needMoreBytes
    /// A reply was consumed; send these bytes and keep reading.
    case send([UInt8])
    /// Done; the bytes still in the buffer belong to the protocol that follows.
    case finished
}

/// A byte-level handshake that runs at the start of a connection (proxy negotiation, WebSocket
/// upgrade). Pure: no I/O, so every answer a peer can give is testable with plain bytes.
protocol TunnelHandshake {
    /// The bytes the client sends first.
    mutating func start() -> [UInt8]
    /// Looks at `received` (everything not yet consumed), consumes what it understood and says
    /// what to do next.
    mutating func advance(_ received: inout [UInt8]) throws(TunnelFailure) -> HandshakeStep
}

/// The head of an HTTP/1.x response: the status line and the header fields.
struct HTTPResponseHead: Equatable {
    /// Longest head accepted; a peer that sends more is not speaking HTTP to us.
    static let maximumLength = 16 * 1024

    var status: Int
    var reason: String
    /// Header fields with lower-cased names, in order.
    var headers: [(name: String, value: String)]

    static func == (lhs: HTTPResponseHead, rhs: HTTPResponseHead) -> Bool {
        lhs.status == rhs.status && lhs.reason == rhs.reason && lhs.headers.elementsEqual(rhs.headers) { $0 == $1 }
    }

    func value(of name: String) -> String? {
        headers.first { $0.name == name }?.value
    }

    /// The head at the start of `buffer`, removed from it; nil when the head is not complete yet.
    /// - Parameter peer: Names the other side in errors ("the HTTP proxy …").
    static func take(from buffer: inout [UInt8], peer: String) throws(TunnelFailure) -> HTTPResponseHead? {
        guard let end = headEnd(in: buffer) else {
            if buffer.count > maximumLength {
                throw TunnelFailure("\(peer) sent more than \(maximumLength) bytes without ending its HTTP answer")
            }
            return nil
        }
        let text = String(decoding: buffer[..<end], as: UTF8.self)
        buffer.removeFirst(end + 4)
        var lines = text.split(separator: "\r\n", omittingEmptySubsequences: false)
        guard !lines.isEmpty else { throw TunnelFailure("\(peer) sent an empty HTTP answer") }
        let statusLine = lines.removeFirst()
        let parts = statusLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]), (100...999).contains(status)
        else {
            throw TunnelFailure("\(peer) did not answer in HTTP (it sent '\(statusLine.prefix(60))')")
        }
        var headers: [(name: String, value: String)] = []
        for line in lines where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingWhitespace()
            headers.append((name, value))
        }
        return HTTPResponseHead(status: status, reason: parts.count > 2 ? String(parts[2]) : "", headers: headers)
    }

    private static func headEnd(in buffer: [UInt8]) -> Int? {
        guard buffer.count >= 4 else { return nil }
        for index in 0...(buffer.count - 4)
        where buffer[index] == 13 && buffer[index + 1] == 10 && buffer[index + 2] == 13 && buffer[index + 3] == 10 {
            return index
        }
        return nil
    }
}

// MARK: - HTTP CONNECT

/// Opens a tunnel through an HTTP proxy: `CONNECT host:port`, optionally with basic
/// authentication; any 2xx answer opens the tunnel.
struct HTTPConnectHandshake: TunnelHandshake {
    var targetHost: String
    var targetPort: Int
    var username: String?
    var password: String?
    var proxyName: String

    func start() -> [UInt8] {
        let target = hostAndPort(targetHost, targetPort)
        var request = "CONNECT \(target) HTTP/1.1\r\nHost: \(target)\r\n"
        if let username {
            let credentials = Data("\(username):\(password ?? "")".utf8).base64EncodedString()
            request += "Proxy-Authorization: Basic \(credentials)\r\n"
        }
        request += "\r\n"
        return Array(request.utf8)
    }

    func advance(_ received: inout [UInt8]) throws(TunnelFailure) -> HandshakeStep {
        guard let head = try HTTPResponseHead.take(from: &received, peer: "the \(proxyName)") else {
            return .needMoreBytes
        }
        switch head.status {
        case 200..<300:
            return .finished
        case 407, 401:
            // 407 is the standard answer; some proxies (tinyproxy) answer wrong credentials with 401.
            throw TunnelFailure(
                username == nil
                    ? "the \(proxyName) requires authentication (\(head.status) \(head.reason)); give a user name and password"
                    : "the \(proxyName) refused the user name and password (\(head.status) \(head.reason))")
        default:
            throw TunnelFailure(
                "the \(proxyName) refused to connect to \(hostAndPort(targetHost, targetPort)) (\(head.status) \(head.reason))"
            )
        }
    }
}

// MARK: - SOCKS4

/// Opens a tunnel through a SOCKS4 proxy (RFC-less, the 1992 protocol): CONNECT to an IPv4
/// address with a user id.
struct SOCKS4Handshake: TunnelHandshake {
    /// The target's IPv4 address (SOCKS4 carries no names).
    var address: [UInt8]
    var port: Int
    var userId: String
    var proxyName: String

    func start() -> [UInt8] {
        [4, 1, UInt8(port >> 8), UInt8(port & 0xFF)] + address + Array(userId.utf8) + [0]
    }

    func advance(_ received: inout [UInt8]) throws(TunnelFailure) -> HandshakeStep {
        guard received.count >= 8 else { return .needMoreBytes }
        let code = received[1]
        received.removeFirst(8)
        switch code {
        case 0x5A: return .finished
        case 0x5B: throw TunnelFailure("the \(proxyName) rejected the connection (SOCKS4 reply 91: rejected or failed)")
        case 0x5C:
            throw TunnelFailure(
                "the \(proxyName) rejected the connection (SOCKS4 reply 92: it cannot reach an identd on this host)")
        case 0x5D: throw TunnelFailure("the \(proxyName) rejected the user id '\(userId)' (SOCKS4 reply 93)")
        default: throw TunnelFailure("the \(proxyName) sent a reply that is not SOCKS4 (code \(code))")
        }
    }
}

// MARK: - SOCKS5

/// Opens a tunnel through a SOCKS5 proxy (RFC 1928): no authentication or user name and password
/// (RFC 1929), then CONNECT to the host by name (the proxy resolves it) or by address literal.
struct SOCKS5Handshake: TunnelHandshake {
    var targetHost: String
    var targetPort: Int
    var username: String?
    var password: String?
    var proxyName: String

    private enum Phase { case method, authentication, connect }
    private var phase = Phase.method

    init(targetHost: String, targetPort: Int, username: String?, password: String?, proxyName: String) {
        self.targetHost = targetHost
        self.targetPort = targetPort
        self.username = username
        self.password = password
        self.proxyName = proxyName
    }

    func start() -> [UInt8] {
        // 0: no authentication, 2: user name and password (offered only with a user name).
        username == nil ? [5, 1, 0] : [5, 2, 0, 2]
    }

    mutating func advance(_ received: inout [UInt8]) throws(TunnelFailure) -> HandshakeStep {
        switch phase {
        case .method:
            guard received.count >= 2 else { return .needMoreBytes }
            let (version, method) = (received[0], received[1])
            received.removeFirst(2)
            guard version == 5 else {
                throw TunnelFailure("the \(proxyName) does not speak SOCKS5 (version byte \(version))")
            }
            switch method {
            case 0:
                phase = .connect
                return .send(connectRequest())
            case 2 where username != nil:
                phase = .authentication
                let user = Array((username ?? "").utf8)
                let secret = Array((password ?? "").utf8)
                return .send([1, UInt8(user.count)] + user + [UInt8(secret.count)] + secret)
            case 0xFF, 2:
                // 0xFF: none of the offered methods is acceptable; 2 without a user name to send.
                throw TunnelFailure(
                    username == nil
                        ? "the \(proxyName) requires authentication; give a user name and password"
                        : "the \(proxyName) accepts none of the offered authentication methods")
            default:
                throw TunnelFailure("the \(proxyName) chose authentication method \(method), which was not offered")
            }
        case .authentication:
            guard received.count >= 2 else { return .needMoreBytes }
            let status = received[1]
            received.removeFirst(2)
            guard status == 0 else {
                throw TunnelFailure("the \(proxyName) refused the user name and password (status \(status))")
            }
            phase = .connect
            return .send(connectRequest())
        case .connect:
            guard received.count >= 2 else { return .needMoreBytes }
            guard received[0] == 5 else { throw TunnelFailure("the \(proxyName) sent a reply that is not SOCKS5") }
            let reply = received[1]
            guard reply == 0 else {
                throw TunnelFailure(
                    "the \(proxyName) could not connect to \(hostAndPort(targetHost, targetPort)): \(Self.describe(reply))"
                )
            }
            guard received.count >= 5 else { return .needMoreBytes }
            let addressLength: Int
            switch received[3] {
            case 1: addressLength = 4
            case 3: addressLength = 1 + Int(received[4])
            case 4: addressLength = 16
            default: throw TunnelFailure("the \(proxyName) sent an unknown address type \(received[3])")
            }
            let total = 4 + addressLength + 2
            guard received.count >= total else { return .needMoreBytes }
            received.removeFirst(total)
            return .finished
        }
    }

    private func connectRequest() -> [UInt8] {
        var request: [UInt8] = [5, 1, 0]
        if let ipv4 = IPAddressLiteral.ipv4(targetHost) {
            request += [1] + ipv4
        } else if let ipv6 = IPAddressLiteral.ipv6(targetHost) {
            request += [4] + ipv6
        } else {
            let name = Array(targetHost.utf8.prefix(255))
            request += [3, UInt8(name.count)] + name
        }
        return request + [UInt8(targetPort >> 8), UInt8(targetPort & 0xFF)]
    }

    static func describe(_ reply: UInt8) -> String {
        switch reply {
        case 1: "general failure (reply 1)"
        case 2: "not allowed by its rules (reply 2)"
        case 3: "network unreachable (reply 3)"
        case 4: "host unreachable (reply 4)"
        case 5: "connection refused (reply 5)"
        case 6: "TTL expired (reply 6)"
        case 7: "command not supported (reply 7)"
        case 8: "address type not supported (reply 8)"
        default: "reply \(reply)"
        }
    }
}

/// IP address literals as bytes, for SOCKS.
enum IPAddressLiteral {
    static func ipv4(_ text: String) -> [UInt8]? {
        var address = in_addr()
        guard inet_pton(AF_INET, text, &address) == 1 else { return nil }
        return withUnsafeBytes(of: &address) { Array($0) }
    }

    static func ipv6(_ text: String) -> [UInt8]? {
        var address = in6_addr()
        guard inet_pton(AF_INET6, text, &address) == 1 else { return nil }
        return withUnsafeBytes(of: &address) { Array($0) }
    }
}

// MARK: - WebSocket upgrade

/// The client side of the WebSocket opening handshake (RFC 6455 §4) for IoT Hub's
/// `/$iothub/websocket` with the `mqtt` subprotocol.
struct WebSocketHandshake: TunnelHandshake {
    static let path = "/$iothub/websocket"

    /// The `Host` header: the hub's (or gateway's) name and port.
    var host: String
    var port: Int
    /// `Sec-WebSocket-Key`: base64 of 16 random bytes.
    var key: String
    var userAgent: String

    init(host: String, port: Int, userAgent: String, key: String = WebSocketHandshake.randomKey()) {
        self.host = host
        self.port = port
        self.key = key
        self.userAgent = userAgent
    }

    static func randomKey() -> String {
        var generator = SystemRandomNumberGenerator()
        return Data((0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }).base64EncodedString()
    }

    /// The `Sec-WebSocket-Accept` a server must answer to `key`.
    static func acceptValue(for key: String) -> String {
        let input = Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)
        var digest = [UInt8](repeating: 0, count: Int(SHA_DIGEST_LENGTH))
        _ = input.withUnsafeBufferPointer { bytes in
            digest.withUnsafeMutableBufferPointer { SHA1(bytes.baseAddress, bytes.count, $0.baseAddress) }
        }
        return Data(digest).base64EncodedString()
    }

    func start() -> [UInt8] {
        let hostHeader = port == 443 ? (host.contains(":") ? "[\(host)]" : host) : hostAndPort(host, port)
        let request =
            "GET \(Self.path) HTTP/1.1\r\nHost: \(hostHeader)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\nUser-Agent: \(userAgent)\r\n\r\n"
        return Array(request.utf8)
    }

    func advance(_ received: inout [UInt8]) throws(TunnelFailure) -> HandshakeStep {
        guard let head = try HTTPResponseHead.take(from: &received, peer: "the hub") else { return .needMoreBytes }
        guard head.status == 101 else {
            throw TunnelFailure("the hub refused the WebSocket upgrade at \(Self.path) (\(head.status) \(head.reason))")
        }
        guard head.value(of: "upgrade")?.lowercased() == "websocket" else {
            throw TunnelFailure("the hub's answer to the WebSocket upgrade lacks 'Upgrade: websocket'")
        }
        guard head.value(of: "sec-websocket-accept") == Self.acceptValue(for: key) else {
            throw TunnelFailure("the hub's Sec-WebSocket-Accept does not match the key sent")
        }
        if let subprotocol = head.value(of: "sec-websocket-protocol"), subprotocol.lowercased() != "mqtt" {
            throw TunnelFailure("the hub chose the WebSocket subprotocol '\(subprotocol)', not mqtt")
        }
        return .finished
    }
}
