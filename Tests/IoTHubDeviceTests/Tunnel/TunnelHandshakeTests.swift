import Foundation
import Testing

@testable import IoTHubDevice

/// The proxy and WebSocket handshakes, byte for byte, including every refusal a peer can send.
@Suite struct TunnelHandshakeTests {
    private func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

    @Test func httpConnectAsksForTheTargetAndSendsBasicCredentials() throws {
        let plain = HTTPConnectHandshake(
            targetHost: "hub.example", targetPort: 443, username: nil, password: nil, proxyName: "HTTP proxy p:3128")
        #expect(text(plain.start()) == "CONNECT hub.example:443 HTTP/1.1\r\nHost: hub.example:443\r\n\r\n")
        let authenticated = HTTPConnectHandshake(
            targetHost: "::1", targetPort: 8883, username: "user", password: "pass", proxyName: "HTTP proxy p:3128")
        let request = text(authenticated.start())
        #expect(request.hasPrefix("CONNECT [::1]:8883 HTTP/1.1\r\n"))
        #expect(request.contains("Proxy-Authorization: Basic dXNlcjpwYXNz\r\n"))
    }

    @Test func httpConnectWaitsForTheWholeAnswerAndKeepsWhatFollows() throws {
        let handshake = HTTPConnectHandshake(
            targetHost: "hub", targetPort: 443, username: nil, password: nil, proxyName: "HTTP proxy p:3128")
        var received = Array("HTTP/1.1 200 Connection est".utf8)
        #expect(try handshake.advance(&received) == .needMoreBytes)
        received += Array("ablished\r\nProxy-Agent: x\r\n\r\n\u{16}\u{03}".utf8)
        #expect(try handshake.advance(&received) == .finished)
        #expect(received == [0x16, 0x03])
    }

    @Test(
        arguments: [
            ("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", nil, "requires authentication (407"),
            ("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", "user", "refused the user name and password (407"),
            ("HTTP/1.0 403 Forbidden\r\n\r\n", nil, "refused to connect to hub:443 (403 Forbidden)"),
            ("SSH-2.0-OpenSSH\r\n\r\n", nil, "did not answer in HTTP"),
        ] as [(String, String?, String)])
    func httpConnectRefusalsSayWhy(answer: String, username: String?, expected: String) throws {
        let handshake = HTTPConnectHandshake(
            targetHost: "hub", targetPort: 443, username: username, password: "x", proxyName: "HTTP proxy p:3128")
        var received = Array(answer.utf8)
        do {
            _ = try handshake.advance(&received)
            Issue.record("accepted \(answer)")
        } catch {
            #expect(error.description.contains(expected), "\(error)")
            #expect(error.description.contains("HTTP proxy p:3128"))
        }
    }

    @Test func anEndlessHTTPAnswerIsRefused() {
        let handshake = HTTPConnectHandshake(
            targetHost: "hub", targetPort: 443, username: nil, password: nil, proxyName: "HTTP proxy p:3128")
        var received = [UInt8](repeating: 65, count: HTTPResponseHead.maximumLength + 1)
        #expect(throws: TunnelFailure.self) { try handshake.advance(&received) }
    }

    @Test func socks4ConnectsToAnAddressWithAUserId() throws {
        let handshake = SOCKS4Handshake(
            address: [127, 0, 0, 1], port: 8883, userId: "dev", proxyName: "SOCKS4 proxy p:1080")
        #expect(handshake.start() == [4, 1, 0x22, 0xB3, 127, 0, 0, 1, 100, 101, 118, 0])
        var granted: [UInt8] = [0, 0x5A, 0, 0, 0, 0, 0]
        #expect(try handshake.advance(&granted) == .needMoreBytes)
        granted.append(0)
        #expect(try handshake.advance(&granted) == .finished)
        #expect(granted.isEmpty)
        var rejected: [UInt8] = [0, 0x5B, 0, 0, 0, 0, 0, 0]
        #expect(
            throws: TunnelFailure(
                "the SOCKS4 proxy p:1080 rejected the connection (SOCKS4 reply 91: rejected or failed)")
        ) {
            try handshake.advance(&rejected)
        }
    }

    @Test func socks5WithoutAuthenticationConnectsByName() throws {
        var handshake = SOCKS5Handshake(
            targetHost: "localhost", targetPort: 443, username: nil, password: nil, proxyName: "SOCKS5 proxy p:1080")
        #expect(handshake.start() == [5, 1, 0])
        var received: [UInt8] = [5, 0]
        #expect(try handshake.advance(&received) == .send([5, 1, 0, 3, 9] + Array("localhost".utf8) + [1, 187]))
        received = [5, 0, 0, 3, 4] + Array("host".utf8)
        #expect(try handshake.advance(&received) == .needMoreBytes)
        received += [0, 80, 0x10]
        #expect(try handshake.advance(&received) == .finished)
        #expect(received == [0x10])
    }

    @Test func socks5AuthenticatesWithUserNameAndPassword() throws {
        var handshake = SOCKS5Handshake(
            targetHost: "10.1.2.3", targetPort: 8883, username: "user", password: "pw", proxyName: "SOCKS5 proxy p:1080"
        )
        #expect(handshake.start() == [5, 2, 0, 2])
        var received: [UInt8] = [5, 2]
        #expect(try handshake.advance(&received) == .send([1, 4] + Array("user".utf8) + [2] + Array("pw".utf8)))
        received = [1, 0]
        #expect(try handshake.advance(&received) == .send([5, 1, 0, 1, 10, 1, 2, 3, 0x22, 0xB3]))
        received = [5, 0, 0, 1, 0, 0, 0, 0, 0, 0]
        #expect(try handshake.advance(&received) == .finished)
    }

    @Test func socks5RefusalsSayWhy() throws {
        var badPassword = SOCKS5Handshake(
            targetHost: "hub", targetPort: 1, username: "u", password: "p", proxyName: "SOCKS5 proxy p:1080")
        var received: [UInt8] = [5, 2, 1, 1]
        _ = try badPassword.advance(&received)
        #expect(throws: TunnelFailure("the SOCKS5 proxy p:1080 refused the user name and password (status 1)")) {
            try badPassword.advance(&received)
        }

        var needsPassword = SOCKS5Handshake(
            targetHost: "hub", targetPort: 1, username: nil, password: nil, proxyName: "SOCKS5 proxy p:1080")
        received = [5, 0xFF]
        #expect(throws: TunnelFailure("the SOCKS5 proxy p:1080 requires authentication; give a user name and password"))
        { try needsPassword.advance(&received) }

        var refused = SOCKS5Handshake(
            targetHost: "hub", targetPort: 1, username: nil, password: nil, proxyName: "SOCKS5 proxy p:1080")
        received = [5, 0, 5, 5]
        _ = try refused.advance(&received)
        #expect(
            throws: TunnelFailure("the SOCKS5 proxy p:1080 could not connect to hub:1: connection refused (reply 5)")
        ) { try refused.advance(&received) }
    }

    @Test func theWebSocketAcceptValueFollowsRFC6455() {
        // The example of RFC 6455 section 1.3.
        #expect(WebSocketHandshake.acceptValue(for: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test func theWebSocketUpgradeAsksForMQTTAndChecksTheAnswer() throws {
        let handshake = WebSocketHandshake(
            host: "hub.example", port: 443, userAgent: "test", key: "dGhlIHNhbXBsZSBub25jZQ==")
        let request = text(handshake.start())
        #expect(request.hasPrefix("GET /$iothub/websocket HTTP/1.1\r\nHost: hub.example\r\n"))
        #expect(request.contains("Sec-WebSocket-Protocol: mqtt\r\n"))
        #expect(request.contains("Sec-WebSocket-Version: 13\r\n"))
        #expect(
            text(WebSocketHandshake(host: "localhost", port: 8443, userAgent: "t").start()).contains(
                "Host: localhost:8443\r\n"))

        var accepted = Array(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
                .utf8)
        #expect(try handshake.advance(&accepted) == .finished)

        var wrongKey = Array(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: AAAA\r\n\r\n".utf8)
        #expect(throws: TunnelFailure("the hub's Sec-WebSocket-Accept does not match the key sent")) {
            try handshake.advance(&wrongKey)
        }
        var refused = Array("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".utf8)
        #expect(throws: TunnelFailure("the hub refused the WebSocket upgrade at /$iothub/websocket (404 Not Found)")) {
            try handshake.advance(&refused)
        }
    }
}
