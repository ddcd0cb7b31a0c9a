import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import IoTHubDevice

/// The tunnel's hub-side socket, read back with `getsockopt`.
@Suite(.timeLimit(.minutes(1))) struct MQTTTunnelTests {
    @Test func theHubConnectionHasNagleOffAndNoSocketDebugging() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let server = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(server.localAddress?.port)
        let channel = try await MQTTTunnel.hubBootstrap(eventLoop: group.next(), timeout: .seconds(5)).connect(
            host: "127.0.0.1", port: port
        ).get()
        let noDelay = try await channel.getOption(ChannelOptions.tcpOption(.tcp_nodelay)).get()
        // The same option number at the socket level is SO_DEBUG on Linux: what
        // `socketOption(.tcp_nodelay)` set by mistake.
        let socketDebug = try await channel.getOption(
            ChannelOptions.socketOption(NIOBSDSocket.Option(rawValue: SO_DEBUG))
        ).get()
        #expect(noDelay != 0)
        #expect(socketDebug == 0)
        try await channel.close()
        try await server.close()
    }
}
