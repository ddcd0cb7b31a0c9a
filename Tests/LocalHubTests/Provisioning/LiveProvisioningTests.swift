import Foundation
import IoTHubProtocol
import Testing

@testable import LocalHub

/// LocalHub's provisioning service over real TLS sockets with mosquitto's command-line client,
/// an MQTT implementation independent of ours (Microsoft's own client is in Tests/conformance).
@Suite(.serialized, .timeLimit(.minutes(3))) struct LiveProvisioningTests {
    static func arguments(_ hub: TestHub, registrationId: String, password: String, clientId: String? = nil) -> [String]
    {
        [
            "-h", "localhost", "-p", String(hub.ports.mqtt), "--cafile", hub.caFile.path, "-V", "mqttv311",
            "-i", clientId ?? registrationId, "-u",
            "\(hub.localHub.idScope)/registrations/\(registrationId)/api-version=2019-03-31",
            "-P", password,
        ]
    }

    static func token(_ hub: TestHub, _ registrationId: String, key: String) throws -> String {
        let resource = ProvisioningProtocol.resourceURI(idScope: hub.localHub.idScope, registrationId: registrationId)
        return try SASToken(resourceURI: resource, key: key, timeToLive: 600, keyName: "registration").string
    }

    @Test func aRegistrationPublishedOverMQTTIsAcknowledgedAndCreatesTheDevice() async throws {
        try await TestHub.with(devices: []) { hub in
            let key = try hub.localHub.enrollDevice(registrationId: "live-1")
            let run = try await ProgramRun.run(
                "mosquitto_pub",
                Self.arguments(hub, registrationId: "live-1", password: try Self.token(hub, "live-1", key: key))
                    + [
                        "-q", "1", "-t", "$dps/registrations/PUT/iotdps-register/?$rid=1", "-m",
                        #"{"registrationId":"live-1"}"#, "-d",
                    ])
            #expect(run.status == 0, "\(run.error)")
            #expect(run.output.contains("received PUBACK"), "\(run.output)")
            #expect(hub.localHub.registrationCount(of: "live-1") == 1)
            let device = try #require(hub.hub.identity(IdentityKey(deviceId: "live-1")))
            #expect(device.authentication.primaryKey == key)
        }
    }

    @Test func aWrongKeyOrAnIoTHubTopicIsRefused() async throws {
        try await TestHub.with(devices: []) { hub in
            let key = try hub.localHub.enrollDevice(registrationId: "live-2")
            let wrong = try await ProgramRun.run(
                "mosquitto_pub",
                Self.arguments(
                    hub, registrationId: "live-2",
                    password: try Self.token(hub, "live-2", key: IdentityAuthentication.randomKey()))
                    + ["-q", "1", "-t", "$dps/registrations/PUT/iotdps-register/?$rid=1", "-m", "{}"])
            #expect(wrong.status != 0)
            #expect(wrong.error.lowercased().contains("not authori"), "\(wrong.error)")

            // A provisioning connection cannot send telemetry: the connection is closed unacknowledged.
            let telemetry = try await ProgramRun.run(
                "mosquitto_pub",
                Self.arguments(hub, registrationId: "live-2", password: try Self.token(hub, "live-2", key: key))
                    + ["-q", "1", "-t", "devices/live-2/messages/events/", "-m", "x", "-d"])
            #expect(!telemetry.output.contains("received PUBACK"), "\(telemetry.output)")
            #expect(hub.hub.telemetry.lastSequenceNumber == 0)
            #expect(hub.localHub.registrationCount(of: "live-2") == 0)
        }
    }
}
