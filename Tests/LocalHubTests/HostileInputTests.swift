import Foundation
import IoTHubProtocol
import NIOCore
import NIOPosix
import NIOSSL
import Testing

@testable import LocalHub

/// Raw TLS connections that misbehave: the hub must close them, stay up, and keep no state
/// for them.
@Suite(.serialized, .timeLimit(.minutes(3))) struct HostileInputTests {
    /// Collects what the server sends and notices when it closes the connection.
    final class Recorder: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let closed: EventLoopPromise<Void>

        init(closed: EventLoopPromise<Void>) {
            self.closed = closed
        }

        func channelInactive(context: ChannelHandlerContext) {
            closed.succeed()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    static let group = MultiThreadedEventLoopGroup.singleton

    /// Opens a TLS connection to the hub's MQTT port; returns it and a future that completes when it closes.
    static func connect(_ hub: TestHub) async throws -> (any Channel, EventLoopFuture<Void>) {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(hub.caFile.path))
        let context = try NIOSSLContext(configuration: configuration)
        let promise = group.next().makePromise(of: Void.self)
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        NIOSSLClientHandler(context: context, serverHostname: "localhost"))
                    try channel.pipeline.syncOperations.addHandler(Recorder(closed: promise))
                }
            }
            .connect(host: "127.0.0.1", port: hub.ports.mqtt).get()
        return (channel, promise.futureResult)
    }

    /// Sends `bytes` and expects the hub to close the connection within `timeout`.
    static func expectClosed(after bytes: [UInt8], _ hub: TestHub, timeout: Duration = .seconds(5)) async throws {
        let (channel, closed) = try await connect(hub)
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
        let closedInTime = await withTaskGroup(of: Bool.self) { group in
            group.addTask { (try? await closed.get()) != nil }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        #expect(closedInTime, "the hub kept a connection open after \(bytes.prefix(8))…")
        try? await channel.close()
    }

    static func connectPacket(clientId: String = "dev1", password: String = "x") -> [UInt8] {
        var buffer = ByteBuffer()
        MQTTPacketEncoder.encode(
            .connect(
                ConnectPacket(
                    cleanSession: false, keepAliveSeconds: 60, clientId: clientId, username: "localhost/\(clientId)/?",
                    password: ByteBuffer(string: password))),
            into: &buffer)
        return Array(buffer.readableBytesView)
    }

    @Test func garbageBytesCloseTheConnection() async throws {
        try await TestHub.with { hub in
            var generator = SystemRandomNumberGenerator()
            for _ in 0..<20 {
                let garbage = (0..<Int.random(in: 1...512, using: &generator)).map { _ in
                    UInt8.random(in: 0...255, using: &generator)
                }
                // A first byte that is a CONNECT with a plausible length may wait for more data; the
                // connect timeout then closes it, so only count bytes that are not a CONNECT.
                guard garbage[0] >> 4 != 1 else { continue }
                try await Self.expectClosed(after: garbage, hub)
            }
            #expect(hub.hub.state.withLockedValue { $0.sessions.isEmpty })
        }
    }

    @Test func aHugeRemainingLengthIsRefusedWithoutBufferingIt() async throws {
        try await TestHub.with { hub in
            // CONNECT claiming 268,435,455 bytes: refused right after the fixed header.
            try await Self.expectClosed(after: [0x10, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x04], hub)
            // The same claim after a valid CONNECT, on a PUBLISH.
            let token = try hub.token(deviceId: "dev1")
            try await Self.expectClosed(
                after: Self.connectPacket(password: token.string) + [0x32, 0xFF, 0xFF, 0xFF, 0x7F], hub)
        }
    }

    @Test func truncatedAndSilentClientsAreClosedByTheConnectTimeout() async throws {
        try await TestHub.with(connectTimeout: .milliseconds(300)) { hub in
            let connect = Self.connectPacket()
            try await Self.expectClosed(after: Array(connect.prefix(connect.count / 2)), hub, timeout: .seconds(3))
            try await Self.expectClosed(after: [], hub, timeout: .seconds(3))
        }
    }

    @Test func packetsBeforeConnectAndMalformedConnectsCloseTheConnection() async throws {
        try await TestHub.with { hub in
            try await Self.expectClosed(after: [0xC0, 0x00], hub)  // PINGREQ first
            try await Self.expectClosed(after: [0x10, 0x02, 0x00, 0x09], hub)  // truncated protocol name
            var connect = Self.connectPacket()
            connect[9] |= 0x01  // the reserved CONNECT flag
            try await Self.expectClosed(after: connect, hub)
        }
    }

    @Test func thousandsOfConnectionsOpeningAndClosingLeaveNothingBehind() async throws {
        try await TestHub.with { hub in
            let token = try hub.token(deviceId: "dev1")
            let connect = Self.connectPacket(password: token.string)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<8 {
                    group.addTask {
                        for index in 0..<125 {
                            let (channel, _) = try await Self.connect(hub)
                            // Half authenticate, half send nothing before closing.
                            if (worker + index) % 2 == 0 { try await channel.writeAndFlush(ByteBuffer(bytes: connect)) }
                            try? await channel.close()
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(await TestHub.eventually { !hub.hub.isConnected(IdentityKey(deviceId: "dev1")) })
            // The hub still serves a well-behaved client afterwards.
            let run = try await ProgramRun.run(
                "mosquitto_pub",
                hub.mosquittoArguments(deviceId: "dev1", password: token.string) + [
                    "-q", "1", "-t", "devices/dev1/messages/events/", "-m", "still here",
                ])
            #expect(run.status == 0, "\(run.error)")
            #expect(
                hub.hub.state.withLockedValue { state in state.sessions.values.filter { $0.connection != nil }.count }
                    <= 1)
        }
    }

    @Test func telemetryMemoryIsBounded() {
        let log = EventLog<Int>(capacity: 1000, byteCapacity: 10_000)
        for value in 0..<100_000 { log.append(value, size: 100) }
        let page = log.read(after: 0, limit: 1000)
        #expect(page.entries.count == 100)
        #expect(page.entries.first?.entry == 99_900)
        #expect(page.dropped == 99_900)
        #expect(log.lastSequenceNumber == 100_000)
    }
}
