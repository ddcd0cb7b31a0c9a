import Foundation
import IoTHubDevice
import IoTHubProtocol
import Logging
import Testing

@testable import LocalHub

/// A LocalHub on ephemeral loopback ports for device-client tests.
struct HubFixture {
    /// The hub's and clients' log level: error, unless IOTHUB_TEST_LOG_LEVEL says otherwise
    /// (to see what happened in a failing test).
    static let logLevel =
        ProcessInfo.processInfo.environment["IOTHUB_TEST_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .error

    let localHub: LocalHub
    let ports: LocalHub.Ports

    var hub: Hub { localHub.hub }

    /// - Parameter edgeDevice: an IoT Edge device the hub plays the Edge runtime for, its
    ///   workload API on a socket in a private temporary directory.
    static func with<T>(
        devices: [String] = ["dev1"], edgeDevice: String? = nil, _ body: (HubFixture) async throws -> T
    ) async throws -> T {
        var logger = Logger(label: "localhub-test")
        logger.logLevel = HubFixture.logLevel
        // Short: a unix socket path has at most 107 bytes.
        let directory = try edgeDevice.map { _ in
            let url = FileManager.default.temporaryDirectory.appendingPathComponent(
                "edge-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(
                at: url, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
            return url
        }
        defer { directory.map { try? FileManager.default.removeItem(at: $0) } }
        let localHub = try LocalHub(
            configuration: .init(
                mqttPort: 0, httpsPort: 0, blobPort: 0, devices: devices, edgeDeviceId: edgeDevice,
                edgeWorkloadSocketPath: directory?.appendingPathComponent("workload.sock").path),
            logger: logger)
        let ports = try await localHub.start()
        let fixture = HubFixture(localHub: localHub, ports: ports)
        do {
            let result = try await body(fixture)
            await localHub.stop()
            return result
        } catch {
            await localHub.stop()
            throw error
        }
    }

    /// Client options that reach this hub: its CA, its ports, quick retries.
    func configuration(over transport: Transport = .tcp, _ adjust: (inout DeviceClientConfiguration) -> Void = { _ in })
        -> DeviceClientConfiguration
    {
        var configuration = DeviceClientConfiguration(
            serverVerificationCertificate: localHub.caCertificatePEM, connectionRetryInterval: .milliseconds(200),
            mqttPort: ports.mqtt, httpsPort: ports.https, operationTimeout: .seconds(10),
            websockets: transport == .webSocket)
        adjust(&configuration)
        return configuration
    }

    func connectionString(_ deviceId: String = "dev1", moduleId: String? = nil) throws -> String {
        try localHub.deviceConnectionString(deviceId: deviceId, moduleId: moduleId)
    }

    func client(
        _ deviceId: String = "dev1", moduleId: String? = nil, over transport: Transport = .tcp,
        _ adjust: (inout DeviceClientConfiguration) -> Void = { _ in }
    ) throws -> IoTHubDeviceClient {
        var logger = Logger(label: "device-test")
        logger.logLevel = HubFixture.logLevel
        return try IoTHubDeviceClient.fromConnectionString(
            connectionString(deviceId, moduleId: moduleId), configuration: configuration(over: transport, adjust),
            logger: logger)
    }

    /// How the hub says `clientId` is connected now (nil: not connected).
    func transport(of clientId: String = "dev1") -> Transport? {
        switch hub.connections().first(where: { $0.clientId == clientId })?.transport {
        case .tcp: .tcp
        case .webSocket: .webSocket
        case nil: nil
        }
    }

    /// Telemetry the hub recorded, in order.
    var telemetry: [TelemetryRecord] {
        hub.telemetry.read(after: 0, limit: 100_000).entries.map(\.entry)
    }

    static func eventually(timeout: Duration = .seconds(10), _ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return condition()
    }
}

/// The first element of a stream, or nil after `timeout`.
func first<Element: Sendable>(of stream: AsyncStream<Element>, timeout: Duration = .seconds(10)) async -> Element? {
    await firstElements(1, of: stream, timeout: timeout).first
}

/// The first `count` elements of a stream; fewer if it ends first, none if they do not all come
/// within `timeout`.
func firstElements<Element: Sendable>(_ count: Int, of stream: AsyncStream<Element>, timeout: Duration = .seconds(10))
    async -> [Element]
{
    await withTaskGroup(of: [Element]?.self) { group in
        group.addTask {
            var elements: [Element] = []
            for await element in stream {
                elements.append(element)
                if elements.count == count { break }
            }
            return elements
        }
        group.addTask {
            try? await Task.sleep(for: timeout)
            return nil
        }
        let result = await group.next() ?? nil
        group.cancelAll()
        return result ?? []
    }
}

/// Sends on a task of its own; the task's value is the error the send ended with, if any.
func sendInBackground(_ client: IoTHubDeviceClient, _ message: Message) -> Task<IoTHubError?, Never> {
    Task {
        do throws(IoTHubError) {
            try await client.send(message)
            return nil
        } catch {
            return error
        }
    }
}

/// How a test client reaches the hub: MQTT over TLS, or MQTT over WebSockets through the
/// client's tunnel.
enum Transport: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case tcp
    case webSocket

    var testDescription: String { rawValue }
}
