import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import LocalHub

/// The hub's accepted TCP connections, their options read back with `getsockopt`.
@Suite(.timeLimit(.minutes(1))) struct ListenersTests {
    @Test func acceptedConnectionsHaveNagleOffAndNoSocketDebugging() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let accepted = group.next().makePromise(of: (any Channel).self)
        let server = try await Listeners.bind(host: "127.0.0.1", port: 0, group: group, name: "test") { channel in
            accepted.succeed(channel)
            return channel.eventLoop.makeSucceededVoidFuture()
        }
        let port = try #require(server.localAddress?.port)
        let client = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port).get()
        let child = try await accepted.futureResult.get()
        let noDelay = try await child.getOption(ChannelOptions.tcpOption(.tcp_nodelay)).get()
        // SO_DEBUG has TCP_NODELAY's number at the socket level: what `socketOption(.tcp_nodelay)` set.
        let socketDebug = try await child.getOption(
            ChannelOptions.socketOption(NIOBSDSocket.Option(rawValue: SO_DEBUG))
        ).get()
        #expect(noDelay != 0)
        #expect(socketDebug == 0)
        try await client.close()
        try await server.close()
    }
}
