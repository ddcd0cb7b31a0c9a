import Foundation
import IoTHubProtocol
import NIOCore
import NIOPosix
import Testing

@testable import IoTHubDevice

/// A tunnel that cannot be opened fails the connect at once with ConnectionFailedError naming
/// what it tried, as a refused TCP connection does.
@Suite(.serialized, .timeLimit(.minutes(2))) struct TunnelFailureTests {
    /// A loopback port nothing listens on.
    private func closedPort() async throws -> Int {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(
            host: "127.0.0.1", port: 0
        ).get()
        let port = channel.localAddress?.port ?? 1
        try await channel.close()
        return port
    }

    private func connectError(_ client: IoTHubDeviceClient) async -> IoTHubError? {
        do {
            try await client.connect()
            return nil
        } catch {
            return error
        }
    }

    @Test func aWebSocketPortWithNothingListeningIsAConnectionFailure() async throws {
        let port = try await closedPort()
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: .webSocket) { $0.httpsPort = port }
            let error = await connectError(client)
            #expect(error?.code == "ConnectionFailedError", "\(String(describing: error))")
            #expect("\(String(describing: error))".contains("wss://localhost:\(port)/$iothub/websocket"))
            await client.shutdown()
        }
    }

    @Test func aPortThatDoesNotSpeakHTTPFailsTheUpgrade() async throws {
        try await HubFixture.with { fixture in
            // The MQTT port speaks TLS but not HTTP: the hub closes on the GET.
            let client = try fixture.client(over: .webSocket) { $0.httpsPort = fixture.ports.mqtt }
            let error = await connectError(client)
            #expect(error?.code == "ConnectionFailedError", "\(String(describing: error))")
            await client.shutdown()
        }
    }

    @Test func anUntrustedHubFailsTLSInTheTunnel() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: .webSocket) { $0.serverVerificationCertificate = nil }
            let error = await connectError(client)
            #expect(error?.code == "ConnectionFailedError", "\(String(describing: error))")
            #expect("\(String(describing: error))".contains("TLS"), "\(String(describing: error))")
            await client.shutdown()
        }
    }

    @Test(arguments: ProxyOptions.Kind.allCases) func aProxyThatIsNotListeningIsNamed(kind: ProxyOptions.Kind)
        async throws
    {
        let port = try await closedPort()
        try await HubFixture.with { fixture in
            let client = try fixture.client {
                $0.proxyOptions = ProxyOptions(kind: kind, address: "127.0.0.1", port: port)
            }
            let error = await connectError(client)
            #expect(error?.code == "ConnectionFailedError", "\(String(describing: error))")
            #expect(
                "\(String(describing: error))".contains("\(kind.displayName) proxy 127.0.0.1:\(port)"),
                "\(String(describing: error))")
            await client.shutdown()
        }
    }

    @Test func theTunnelSocketLivesInAPrivateDirectoryThatGoesAway() throws {
        var path = ""
        do {
            let directory = try PrivateSocketDirectory()
            path = directory.path
            var info = stat()
            #expect(stat(path, &info) == 0)
            #expect(info.st_mode & 0o777 == 0o700)
            #expect(directory.socketPath.utf8.count < 108)
        }
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}
