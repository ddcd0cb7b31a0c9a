import Foundation
import IoTHubDevice
import IoTHubProtocol
import Testing

@testable import LocalHub

/// IoT Edge modules (`IoTHubModuleClient.create_from_edge_environment`, `invoke_method`)
/// against a LocalHub playing the Edge runtime: the workload API on a unix socket signs the
/// module's SAS tokens, and the hub's HTTPS port takes method invocations from modules.
@Suite struct EdgeModuleTests {
    static let edgeDevice = "edge1"

    /// A client made from the module's `IOTEDGE_*` variables, with the fixture's ports (LocalHub
    /// listens on ephemeral ones; the Edge hub on IoT Hub's).
    static func moduleClient(
        _ fixture: HubFixture, _ moduleId: String, sasTokenTimeToLive: Int = 3600,
        environment adjust: (inout [String: String]) -> Void = { _ in }
    ) async throws -> IoTHubDeviceClient {
        var environment = try fixture.localHub.edgeEnvironment(moduleId: moduleId)
        adjust(&environment)
        var configuration = DeviceClientConfiguration(
            sasTokenTimeToLive: sasTokenTimeToLive, connectionRetryInterval: .milliseconds(200),
            mqttPort: fixture.ports.mqtt, httpsPort: fixture.ports.https, operationTimeout: .seconds(10))
        configuration.ensureDesiredProperties = false
        return try await IoTHubDeviceClient.fromEdgeEnvironment(environment: environment, configuration: configuration)
    }

    @Test func aTokenSignedByTheWorkloadAPIIsAcceptedByTheHub() async throws {
        try await HubFixture.with(edgeDevice: Self.edgeDevice) { fixture in
            let client = try await Self.moduleClient(fixture, "filter")
            #expect(client.deviceId == Self.edgeDevice)
            #expect(client.moduleId == "filter")
            #expect(client.configuration.gatewayHostName == "localhost")
            #expect(client.configuration.serverVerificationCertificate == fixture.localHub.caCertificatePEM)
            try await client.connect()
            try await client.send(Message(payload: Data("21.5".utf8), messageId: "edge-1"))
            let record = try #require(fixture.telemetry.last)
            #expect(record.deviceId == Self.edgeDevice)
            #expect(record.moduleId == "filter")
            #expect(client.status.credential == .edgeWorkload)
            await client.shutdown()
        }
    }

    @Test func renewingTheTokenSignsAgain() async throws {
        try await HubFixture.with(edgeDevice: Self.edgeDevice) { fixture in
            // Renewed at half its life: a token lives 4 s, so a new one is signed after 2 s.
            let client = try await Self.moduleClient(fixture, "renewing", sasTokenTimeToLive: 4)
            try await client.connect()
            let firstExpiry = try #require(client.status.tokenExpiry)
            #expect(
                await HubFixture.eventually(timeout: .seconds(30)) {
                    (client.status.tokenExpiry ?? .distantPast) > firstExpiry && client.isConnected
                })
            #expect(client.reconnectionAttempts >= 1)
            // The hub took the new token: the connection works.
            try await client.send(Message(payload: Data("after renewal".utf8), messageId: "renewed"))
            #expect(fixture.telemetry.last?.moduleId == "renewing")
            await client.shutdown()
        }
    }

    @Test func anotherGenerationOfTheModuleGetsNoSignature() async throws {
        try await HubFixture.with(edgeDevice: Self.edgeDevice) { fixture in
            let client = try await Self.moduleClient(fixture, "stale") { environment in
                environment["IOTEDGE_MODULEGENERATIONID"] = "1"
            }
            await #expect {
                try await client.connect()
            } throws: { error in
                guard case .credentialError(let detail) = error as? IoTHubError else { return false }
                return detail.contains("workload API")
            }
            #expect(!fixture.hub.isConnected(IdentityKey(deviceId: Self.edgeDevice, moduleId: "stale")))
            await client.shutdown()
        }
    }

    /// Local debugging without the Edge runtime: `EdgeHubConnectionString` (a module's, with
    /// `GatewayHostName`) and `EdgeModuleCACertificateFile`.
    @Test func theDebuggingVariablesGiveAKeyAndTheGatewaysCA() async throws {
        try await HubFixture.with(edgeDevice: Self.edgeDevice) { fixture in
            _ = try fixture.localHub.edgeEnvironment(moduleId: "debugged")
            let caFile = FileManager.default.temporaryDirectory.appendingPathComponent(
                "edge-ca-\(UUID().uuidString).pem")
            try Data(fixture.localHub.caCertificatePEM.utf8).write(to: caFile)
            defer { try? FileManager.default.removeItem(at: caFile) }
            let connectionString =
                try fixture.connectionString(Self.edgeDevice, moduleId: "debugged") + ";GatewayHostName=localhost"
            let client = try await IoTHubDeviceClient.fromEdgeEnvironment(
                environment: ["EdgeHubConnectionString": connectionString, "EdgeModuleCACertificateFile": caFile.path],
                configuration: fixture.configuration { configuration in
                    configuration.serverVerificationCertificate = nil
                })
            #expect(client.status.credential == .symmetricKey)
            #expect(client.configuration.gatewayHostName == "localhost")
            try await client.connect()
            try await client.send(Message(payload: Data("debug".utf8), messageId: "debug-1"))
            #expect(fixture.telemetry.last?.moduleId == "debugged")
            await client.shutdown()
        }
    }

    @Test func anIncompleteEnvironmentIsRefused() async throws {
        try await HubFixture.with(edgeDevice: Self.edgeDevice) { fixture in
            await #expect {
                _ = try await Self.moduleClient(fixture, "partial") { environment in
                    environment["IOTEDGE_WORKLOADURI"] = nil
                }
            } throws: { error in
                guard case .clientError(let detail) = error as? IoTHubError else { return false }
                return detail.contains("IOTEDGE_WORKLOADURI")
            }
            let configuration = DeviceClientConfiguration(gatewayHostName: "elsewhere")
            await #expect(throws: IoTHubError.self) {
                _ = try await IoTHubDeviceClient.fromEdgeEnvironment(
                    environment: try fixture.localHub.edgeEnvironment(moduleId: "partial"),
                    configuration: configuration)
            }
        }
    }

    /// Answers the first method request `client` gets with status 200 and `{"method": name,
    /// "echo": payload}`; the task's value is the request's name.
    static func answerOneMethod(_ client: IoTHubDeviceClient, _ requests: AsyncStream<MethodRequest>) -> Task<
        String?, any Error
    > {
        Task {
            for await request in requests {
                let payload = try JSONValue(parsing: request.payload)
                try await client.respond(
                    MethodResponse(
                        answering: request, status: 200,
                        payload: JSONValue.object(["method": .string(request.name), "echo": payload]).encoded()))
                return request.name
            }
            return nil
        }
    }

    @Test func aModuleInvokesAMethodOnADeviceAndOnAnotherModule() async throws {
        try await HubFixture.with(devices: ["dev1"], edgeDevice: Self.edgeDevice) { fixture in
            let module = try await Self.moduleClient(fixture, "invoker")
            let device = try fixture.client("dev1")
            _ = try fixture.localHub.edgeEnvironment(moduleId: "target")
            let target = try fixture.client(Self.edgeDevice, moduleId: "target")
            let deviceRequests = device.methodRequests()
            let targetRequests = target.methodRequests()
            #expect(
                await HubFixture.eventually {
                    fixture.hub.identity(IdentityKey(deviceId: "dev1"))?.subscriptions[TopicFilter.methodRequests]
                        != nil
                        && fixture.hub.identity(IdentityKey(deviceId: Self.edgeDevice, moduleId: "target"))?
                            .subscriptions[TopicFilter.methodRequests] != nil
                })

            let deviceAnswer = Self.answerOneMethod(device, deviceRequests)
            let onDevice = try await module.invokeMethod(
                deviceId: "dev1", methodName: "reboot", payload: ["delay": 5], responseTimeout: 10)
            #expect(
                onDevice == MethodInvocationResult(status: 200, payload: ["method": "reboot", "echo": ["delay": 5]]))
            #expect(try await deviceAnswer.value == "reboot")

            let targetAnswer = Self.answerOneMethod(target, targetRequests)
            let onModule = try await module.invokeMethod(
                deviceId: Self.edgeDevice, moduleId: "target", methodName: "setThreshold", payload: 30)
            #expect(onModule == MethodInvocationResult(status: 200, payload: ["method": "setThreshold", "echo": 30]))
            #expect(try await targetAnswer.value == "setThreshold")

            // A target that is not connected: the hub's 404, as a ServiceError.
            await #expect {
                _ = try await module.invokeMethod(deviceId: "nobody", methodName: "reboot")
            } throws: { error in
                guard case .serviceError(let status, _, _) = error as? IoTHubError else { return false }
                return status == 404
            }
            // A device identity cannot invoke methods (the Python SDK's module client only).
            await #expect(throws: IoTHubError.self) {
                _ = try await device.invokeMethod(deviceId: "dev1", methodName: "reboot")
            }
            for client in [module, device, target] { await client.shutdown() }
        }
    }
}
