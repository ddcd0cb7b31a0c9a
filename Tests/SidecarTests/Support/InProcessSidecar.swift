import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import IoTHubDevice
import IoTHubProtocol
import Logging
import NIOCore
import ServiceLifecycle

@testable import LocalHub
@testable import Sidecar

/// The sidecar's HTTP layer in this process, in front of a real bridge and device client that
/// are connected to a real LocalHub on ephemeral loopback ports. Requests go over real HTTP/1
/// (HummingbirdTesting's AsyncHTTPClient, which opens a new connection after a long-poll's
/// `Connection: close`) through the sidecar's own connection handlers.
struct InProcessSidecar {
    let localHub: LocalHub
    let bridge: DeviceBridge
    let client: any TestClientProtocol

    var hub: Hub { localHub.hub }

    /// Starts a hub with device `dev1`, a bridge for it, and the HTTP application; runs `body`
    /// once the device is connected; stops everything after.
    /// - Parameter withOutbox: give the bridge a telemetry outbox (in a temporary directory,
    ///   removed after).
    static func with<T: Sendable>(
        apiToken: String? = nil, withOutbox: Bool = false,
        _ body: @escaping @Sendable (InProcessSidecar) async throws -> T
    ) async throws -> T {
        let outboxDirectory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "outbox-\(UUID().uuidString)"
        ).path
        defer { try? FileManager.default.removeItem(atPath: outboxDirectory) }
        var logger = Logger(label: "sidecar-test")
        logger.logLevel = .error
        let localHub = try LocalHub(
            configuration: .init(mqttPort: 0, httpsPort: 0, blobPort: 0, devices: ["dev1"]), logger: logger)
        let ports = try await localHub.start()
        let configuration = DeviceClientConfiguration(
            serverVerificationCertificate: localHub.caCertificatePEM, connectionRetryInterval: .milliseconds(200),
            mqttPort: ports.mqtt,
            httpsPort: ports.https, operationTimeout: .seconds(10))
        let deviceClient = try IoTHubDeviceClient.fromConnectionString(
            localHub.deviceConnectionString(deviceId: "dev1"), configuration: configuration, logger: logger)
        let bridge = try DeviceBridge(
            client: deviceClient, outbox: withOutbox ? OutboxConfiguration(directory: outboxDirectory) : nil,
            logger: logger)
        let bridgeGroup = ServiceGroup(configuration: .init(services: [bridge], logger: logger))
        let running = Task { try await bridgeGroup.run() }
        defer { running.cancel() }
        do {
            let application = SidecarServer.application(
                bridge: bridge,
                configuration: SidecarServerConfiguration(listen: .tcp(host: "127.0.0.1", port: 0), apiToken: apiToken),
                logger: logger)
            let result = try await application.test(.ahc(.http)) { client in
                // Connected, and subscribed to everything the bridge listens to.
                let key = IdentityKey(deviceId: "dev1")
                let topics = [
                    TopicFilter.methodRequests, TopicFilter.desiredPropertiesPatches,
                    TopicFilter.cloudToDevice(deviceId: "dev1"),
                ]
                let ready = await eventually {
                    bridge.status().state == .connected
                        && topics.allSatisfy { localHub.hub.identity(key)?.subscriptions[$0] != nil }
                }
                guard ready else { throw FixtureError.notConnected }
                return try await body(InProcessSidecar(localHub: localHub, bridge: bridge, client: client))
            }
            await bridgeGroup.triggerGracefulShutdown()
            _ = try? await running.value
            await localHub.stop()
            return result
        } catch {
            await bridgeGroup.triggerGracefulShutdown()
            _ = try? await running.value
            await localHub.stop()
            throw error
        }
    }

    enum FixtureError: Error {
        case notConnected
    }

    /// Telemetry the hub recorded, in order.
    var telemetry: [TelemetryRecord] {
        hub.telemetry.read(after: 0, limit: 100_000).entries.map(\.entry)
    }

    /// Sends a request; the answer's body as text.
    func request(
        _ method: HTTPRequest.Method, _ uri: String, headers: HTTPFields = [:], body: String? = nil
    ) async throws -> (status: HTTPResponse.Status, headers: HTTPFields, body: String) {
        let response = try await client.executeRequest(
            uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) })
        return (response.status, response.headers, String(buffer: response.body))
    }

    /// The answer's body as JSON.
    static func json(_ text: String) throws -> JSONValue {
        try JSONValue(parsing: Data(text.utf8))
    }
}

/// Whether `condition` holds within `timeout`, looking every 20 ms.
func eventually(timeout: Duration = .seconds(10), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return condition()
}
