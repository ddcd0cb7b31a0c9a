import Foundation
import IoTHubProtocol
import Logging
import NIOCore
import NIOPosix
import Testing

@testable import LocalHub

/// A LocalHub on ephemeral loopback ports, in memory, for one test.
struct TestHub {
    let localHub: LocalHub
    let ports: LocalHub.Ports
    let caFile: URL
    let directory: URL

    var hub: Hub { localHub.hub }

    /// Starts a hub, runs `body`, and stops the hub whatever happens.
    static func with<T>(
        devices: [String] = ["dev1"], dataDirectory: String? = nil, connectTimeout: Duration = .seconds(10),
        telemetryByteCapacity: Int = 64 << 20,
        _ body: (TestHub) async throws -> T
    ) async throws -> T {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "localhub-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var logger = Logger(label: "localhub-test")
        logger.logLevel = .warning
        let localHub = try LocalHub(
            configuration: .init(
                mqttPort: 0, httpsPort: 0, blobPort: 0, dataDirectory: dataDirectory, devices: devices,
                telemetryByteCapacity: telemetryByteCapacity, connectTimeout: connectTimeout),
            logger: logger)
        let ports = try await localHub.start()
        let caFile = directory.appendingPathComponent("ca.pem")
        try Data(localHub.caCertificatePEM.utf8).write(to: caFile)
        let testHub = TestHub(localHub: localHub, ports: ports, caFile: caFile, directory: directory)
        do {
            let result = try await body(testHub)
            await localHub.stop()
            try? FileManager.default.removeItem(at: directory)
            return result
        } catch {
            await localHub.stop()
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
    }

    /// A fresh SAS token for a registered identity.
    func token(deviceId: String, moduleId: String? = nil, ttl: Int = 3600) throws -> SASToken {
        let key = try #require(
            hub.identity(IdentityKey(deviceId: deviceId, moduleId: moduleId))?.authentication.primaryKey)
        return try SASToken(
            resourceURI: SASToken.resourceURI(hostName: "localhost", deviceId: deviceId, moduleId: moduleId), key: key,
            timeToLive: ttl)
    }

    /// The owner policy's token, for service and `/local` requests.
    func serviceToken() throws -> SASToken {
        try SASToken(resourceURI: "localhost", key: hub.ownerPolicyKey, timeToLive: 3600, keyName: hub.ownerPolicyName)
    }

    /// mosquitto_pub / mosquitto_sub arguments for connecting as `deviceId`.
    func mosquittoArguments(deviceId: String, password: String) -> [String] {
        [
            "-h", "localhost", "-p", String(ports.mqtt), "--cafile", caFile.path, "-V", "mqttv311",
            "-i", deviceId, "-u", "localhost/\(deviceId)/?api-version=2019-10-01", "-P", password,
        ]
    }

    /// Waits until `condition` holds, polling, for at most `timeout`.
    static func eventually(timeout: Duration = .seconds(10), _ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return condition()
    }
}

/// Runs a command-line program (a real MQTT client) with a time limit.
struct ProgramRun: Sendable {
    var status: Int32
    var output: String
    var error: String

    static func run(_ program: String, _ arguments: [String], timeout: Duration = .seconds(20)) async throws
        -> ProgramRun
    {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/" + program)
        process.arguments = arguments
        let output = Pipe()
        let error = Pipe()
        process.standardOutput = output
        process.standardError = error
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let killer = Task {
            try await Task.sleep(for: timeout)
            process.terminate()
        }
        let outputData = await Task.detached { output.fileHandleForReading.readDataToEndOfFile() }.value
        let errorData = await Task.detached { error.fileHandleForReading.readDataToEndOfFile() }.value
        await Task.detached { process.waitUntilExit() }.value
        killer.cancel()
        return ProgramRun(
            status: process.terminationStatus, output: String(decoding: outputData, as: UTF8.self),
            error: String(decoding: errorData, as: UTF8.self))
    }

    /// Starts a program in the background; the caller terminates it.
    static func start(_ program: String, _ arguments: [String]) throws -> (Process, Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/" + program)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        return (process, output)
    }
}
