import Foundation
import IoTHubDevice
import IoTHubProtocol
import Testing

@testable import LocalHub

/// The README's example, kept compiling and run against LocalHub (with its loops bounded).
@Suite(.timeLimit(.minutes(1))) struct ReadmeExampleTests {
    @Test func theReadmeExampleWorks() async throws {
        try await HubFixture.with { fixture in
            let connectionString = try fixture.connectionString()
            let localHubCA = fixture.localHub.caCertificatePEM
            var configuration = DeviceClientConfiguration(serverVerificationCertificate: localHubCA)
            configuration.mqttPort = fixture.ports.mqtt

            // --- as in the README ---
            let client = try IoTHubDeviceClient.fromConnectionString(connectionString, configuration: configuration)
            try await client.send(
                Message(payload: Data(#"{"t":21.5}"#.utf8), contentType: "application/json", contentEncoding: "utf-8"))
            let patches = client.desiredPropertiesPatches()
            #expect(
                await HubFixture.eventually {
                    fixture.hub.identity(IdentityKey(deviceId: "dev1"))?.subscriptions.isEmpty == false
                })
            try await Task.sleep(for: .milliseconds(200))
            _ = try fixture.hub.patchDesired(
                IdentityKey(deviceId: "dev1"), patch: ["rate": 5], tags: nil, replace: false, ifMatch: nil)
            for await patch in patches {
                try await client.updateReportedProperties(["applied": patch["$version"] ?? nil])
                break
            }
            // ---
            #expect(fixture.hub.identity(IdentityKey(deviceId: "dev1"))?.reported.properties == ["applied": 2])
            #expect(fixture.telemetry.first?.message.contentType == "application/json")
            await client.shutdown()
        }
    }

    @Test func theReadmeProvisioningExampleWorks() async throws {
        try await HubFixture.with(devices: []) { fixture in
            let groupKey = try fixture.localHub.enrollGroup("sensors")
            let idScope = fixture.localHub.idScope
            let configuration = fixture.configuration()

            // --- as in the README (LocalHub: "localhost", its CA and ports in the configuration) ---
            // Group enrollments only:
            let key = try ProvisioningDeviceClient.deriveDeviceKey(groupKey: groupKey, registrationId: "sensor-1")
            let provisioning = try ProvisioningDeviceClient.fromSymmetricKey(
                provisioningHost: "localhost", registrationId: "sensor-1", idScope: idScope, symmetricKey: key,
                configuration: configuration)
            let result = try await provisioning.register(payload: ["modelId": "dtmi:example:sensor;1"])
            let client = try IoTHubDeviceClient(
                hostName: result.assignedHub ?? "", deviceId: result.deviceId ?? "",
                credential: provisioning.deviceCredential,
                configuration: configuration)
            // ---
            try await client.send(Message(payload: Data("provisioned".utf8)))
            #expect(fixture.telemetry.first?.deviceId == "sensor-1")
            await client.shutdown()
        }
    }
}
