import Foundation
import IoTHubProtocol
import Logging
import NIOCore
import Testing

@testable import LocalHub

/// The provisioning service's decisions, on a hub in memory: who is admitted, what a
/// registration does to the registry, what the device is told, and what survives a restart.
@Suite struct ProvisioningServiceTests {
    static func makeHub() -> Hub {
        var logger = Logger(label: "test")
        logger.logLevel = .error
        return Hub(hostName: "localhost", ownerPolicyKey: IdentityAuthentication.randomKey(), logger: logger)
    }

    static func put(_ hub: Hub, _ id: String, group: Bool = false, _ body: JSONValue) throws -> Enrollment {
        let request = try ProvisioningJSON.readEnrollment(
            body, id: id, isGroup: group, hubHostName: hub.hostName, now: Date())
        return try hub.provisioning.put(request, ifMatch: nil)
    }

    static func credentials(
        _ hub: Hub, _ registrationId: String, key: String, clientId: String? = nil, keyName: String? = nil
    ) throws -> ConnectCredentials {
        let resource = ProvisioningProtocol.resourceURI(
            idScope: hub.provisioning.idScope, registrationId: registrationId)
        let token = try SASToken(
            resourceURI: resource, key: key, expiry: Int(Date().timeIntervalSince1970) + 600, keyName: keyName)
        return ConnectCredentials(
            clientId: clientId ?? registrationId,
            username:
                "\(hub.provisioning.idScope)/registrations/\(registrationId)/api-version=2019-03-31&ClientVersion=test",
            password: ByteBuffer(string: token.string))
    }

    /// Registers and polls as a device would; returns the final operation status.
    static func registerAndPoll(_ hub: Hub, _ identity: ProvisioningIdentity, payload: JSONValue? = nil) throws
        -> JSONValue
    {
        let accepted = hub.register(identity, request: .init(registrationId: identity.registrationId, payload: payload))
        #expect(accepted.status == 202)
        #expect(accepted.retryAfter != nil)
        #expect(accepted.body["status"] == "assigning")
        guard case .string(let operationId)? = accepted.body["operationId"] else {
            Issue.record("no operation id in \(accepted.body)")
            return .null
        }
        let polled = hub.provisioningOperationStatus(identity, operationId: operationId)
        #expect(polled.status == 200)
        return polled.body
    }

    @Test func anIndividualEnrollmentAssignsTheDeviceWithItsKeyAndInitialTwin() throws {
        let hub = Self.makeHub()
        let enrollment = try Self.put(
            hub, "sensor-1",
            [
                "attestation": ["type": "symmetricKey"], "deviceId": "device-a",
                "initialTwin": ["tags": ["site": "lab"], "properties": ["desired": ["rate": 5, "$version": 9]]],
            ])
        let key = try #require(enrollment.attestation.primaryKey)
        let identity = try Self.credentials(hub, "sensor-1", key: key).authenticated(by: hub)
        #expect(identity.enrollmentGroupId == nil)

        let status = try Self.registerAndPoll(hub, identity, payload: ["hello": "world"])
        #expect(status["status"] == "assigned")
        #expect(status["registrationState"]?["assignedHub"] == "localhost")
        #expect(status["registrationState"]?["deviceId"] == "device-a")
        #expect(status["registrationState"]?["substatus"] == "initialAssignment")
        #expect(status["registrationState"]?["payload"] == ["hello": "world"])
        let device = try #require(hub.identity(IdentityKey(deviceId: "device-a")))
        #expect(device.authentication.primaryKey == key)
        #expect(device.tags == ["site": "lab"])
        #expect(device.desired.properties == ["rate": 5])

        // Again: the same hub, counted twice, the twin kept (migrateDeviceData defaults to true).
        _ = try hub.patchDesired(
            IdentityKey(deviceId: "device-a"), patch: ["rate": 7], tags: nil, replace: false, ifMatch: nil)
        let again = try Self.registerAndPoll(hub, identity)
        #expect(again["registrationState"]?["substatus"] == "reprovisionedToInitialAssignment")
        #expect(again["registrationState"]?["payload"] == nil)
        #expect(hub.identity(IdentityKey(deviceId: "device-a"))?.desired.properties == ["rate": 7])
        #expect(hub.provisioning.registration("sensor-1")?.registrationCount == 2)
    }

    @Test func resettingDeviceDataRestoresTheInitialTwinAndADeletedDeviceIsCreatedAgain() throws {
        let hub = Self.makeHub()
        let enrollment = try Self.put(
            hub, "sensor-2",
            [
                "attestation": ["type": "symmetricKey"],
                "reprovisionPolicy": ["updateHubAssignment": true, "migrateDeviceData": false],
                "initialTwin": ["properties": ["desired": ["rate": 5]]],
            ])
        let identity = try Self.credentials(hub, "sensor-2", key: try #require(enrollment.attestation.secondaryKey))
            .authenticated(by: hub)
        _ = try Self.registerAndPoll(hub, identity)
        _ = try hub.patchDesired(
            IdentityKey(deviceId: "sensor-2"), patch: ["rate": 9], tags: nil, replace: false, ifMatch: nil)
        _ = try Self.registerAndPoll(hub, identity)
        #expect(hub.identity(IdentityKey(deviceId: "sensor-2"))?.desired.properties == ["rate": 5])

        try hub.deleteIdentity(IdentityKey(deviceId: "sensor-2"), ifMatch: nil)
        let status = try Self.registerAndPoll(hub, identity)
        #expect(status["status"] == "assigned")
        #expect(hub.identity(IdentityKey(deviceId: "sensor-2")) != nil)
    }

    @Test func aGroupAdmitsDerivedKeysOnlyAndAnIndividualEnrollmentTakesPrecedence() throws {
        let hub = Self.makeHub()
        let groupKey = IdentityAuthentication.randomKey()
        _ = try Self.put(
            hub, "fleet", group: true,
            ["attestation": ["type": "symmetricKey", "symmetricKey": ["primaryKey": .string(groupKey)]]])
        let derived = try #require(
            ProvisioningProtocol.derivedDeviceKey(groupKey: groupKey, registrationId: "member-1"))

        let identity = try Self.credentials(hub, "member-1", key: derived, keyName: "registration").authenticated(
            by: hub)
        #expect(identity.enrollmentGroupId == "fleet")
        #expect(identity.deviceAuthentication.primaryKey == derived)
        #expect(try Self.credentials(hub, "member-1", key: groupKey).refusal(by: hub) == .notAuthorized)
        // A key derived for another registration id does not admit this one.
        #expect(try Self.credentials(hub, "member-2", key: derived).refusal(by: hub) == .notAuthorized)

        let status = try Self.registerAndPoll(hub, identity)
        #expect(status["registrationState"]?["deviceId"] == "member-1")
        #expect(hub.identity(IdentityKey(deviceId: "member-1"))?.authentication.primaryKey == derived)

        // Once member-1 has an individual enrollment, only its key admits it.
        _ = try Self.put(hub, "member-1", ["attestation": ["type": "symmetricKey"]])
        #expect(try Self.credentials(hub, "member-1", key: derived).refusal(by: hub) == .notAuthorized)
    }

    @Test func connectRefusals() throws {
        let hub = Self.makeHub()
        let key = try #require(
            try Self.put(hub, "sensor-3", ["attestation": ["type": "symmetricKey"]]).attestation.primaryKey)
        #expect(
            try Self.credentials(hub, "sensor-3", key: key, clientId: "other").refusal(by: hub) == .identifierRejected)
        #expect(
            try Self.credentials(hub, "sensor-3", key: key, keyName: "iothubowner").refusal(by: hub) == .notAuthorized)
        #expect(try Self.credentials(hub, "Sensor-3", key: key).refusal(by: hub) == .identifierRejected)
        #expect(try Self.credentials(hub, "nobody", key: key).refusal(by: hub) == .notAuthorized)
        var noPassword = try Self.credentials(hub, "sensor-3", key: key)
        noPassword.password = nil
        #expect(noPassword.refusal(by: hub) == .notAuthorized)
        var garbage = try Self.credentials(hub, "sensor-3", key: key)
        garbage.password = ByteBuffer(string: "not a token")
        #expect(garbage.refusal(by: hub) == .badUsernameOrPassword)
        // An IoT Hub user name is never taken for a DPS one, nor a DPS one of another scope.
        #expect(!hub.provisioning.isProvisioningUsername("localhost/sensor-3/?api-version=2021-04-12"))
        #expect(!hub.provisioning.isProvisioningUsername("0neFFFFFFFF/registrations/sensor-3/api-version=2019-03-31"))
    }

    @Test func aDisabledEnrollmentAnswersDisabledAndCreatesNoDevice() throws {
        let hub = Self.makeHub()
        let enrollment = try Self.put(
            hub, "sensor-4", ["attestation": ["type": "symmetricKey"], "provisioningStatus": "disabled"])
        let identity = try Self.credentials(hub, "sensor-4", key: try #require(enrollment.attestation.primaryKey))
            .authenticated(by: hub)
        let status = try Self.registerAndPoll(hub, identity)
        #expect(status["status"] == "disabled")
        #expect(status["registrationState"]?["status"] == "disabled")
        #expect(hub.identity(IdentityKey(deviceId: "sensor-4")) == nil)
    }

    @Test func aDeviceIdTheHubRefusesFailsTheRegistration() throws {
        let hub = Self.makeHub()
        // ':' is a valid registration id character but not one of the hub's device id characters.
        let enrollment = try Self.put(hub, "urn:sensor", ["attestation": ["type": "symmetricKey"]])
        let identity = try Self.credentials(hub, "urn:sensor", key: try #require(enrollment.attestation.primaryKey))
            .authenticated(by: hub)
        let status = try Self.registerAndPoll(hub, identity)
        #expect(status["status"] == "failed")
        #expect(status["registrationState"]?["errorCode"] != nil)
    }

    @Test func operationsBelongToTheirDeviceAndMismatchedRequestsAreRefused() throws {
        let hub = Self.makeHub()
        let first = try #require(
            try Self.put(hub, "sensor-5", ["attestation": ["type": "symmetricKey"]]).attestation.primaryKey)
        let second = try #require(
            try Self.put(hub, "sensor-6", ["attestation": ["type": "symmetricKey"]]).attestation.primaryKey)
        let five = try Self.credentials(hub, "sensor-5", key: first).authenticated(by: hub)
        let six = try Self.credentials(hub, "sensor-6", key: second).authenticated(by: hub)
        let accepted = hub.register(five, request: .init(registrationId: "sensor-5", payload: nil))
        guard case .string(let operationId)? = accepted.body["operationId"] else {
            Issue.record("no operation id")
            return
        }
        #expect(hub.provisioningOperationStatus(six, operationId: operationId).status == 404)
        #expect(hub.provisioningOperationStatus(five, operationId: "4.0.unknown").status == 404)
        #expect(hub.register(five, request: .init(registrationId: "sensor-6", payload: nil)).status == 400)
    }

    @Test func enrollmentBodiesAreChecked() throws {
        let hub = Self.makeHub()
        let bad: [JSONValue] = [
            [:], ["attestation": ["type": "tpm"]],
            ["attestation": ["type": "symmetricKey", "symmetricKey": ["primaryKey": "c2hvcnQ="]]],
            ["attestation": ["type": "symmetricKey"], "provisioningStatus": "paused"],
            ["attestation": ["type": "symmetricKey"], "iotHubs": ["other.azure-devices.net"]],
            ["attestation": ["type": "symmetricKey"], "allocationPolicy": "random"],
            ["attestation": ["type": "symmetricKey"], "registrationId": "someone-else"],
            [
                "attestation": [
                    "type": "x509", "x509": ["clientCertificates": ["primary": ["certificate": "not a certificate"]]],
                ]
            ],
            ["attestation": ["type": "symmetricKey"], "deviceId": "bad id"],
        ]
        for body in bad {
            #expect(throws: ProvisioningFailure.self, "\(body)") { _ = try Self.put(hub, "sensor-7", body) }
        }
        let good = try Self.put(
            hub, "sensor-7",
            ["attestation": ["type": "symmetricKey"], "iotHubs": ["LOCALHOST"], "allocationPolicy": "hashed"])
        #expect(throws: ProvisioningFailure.self) {
            _ = try hub.provisioning.put(
                ProvisioningJSON.readEnrollment(
                    ["attestation": ["type": "symmetricKey"]], id: "sensor-7", isGroup: false, hubHostName: "localhost",
                    now: Date()),
                ifMatch: "\"stale\"")
        }
        let replaced = try hub.provisioning.put(
            ProvisioningJSON.readEnrollment(
                ["attestation": ["type": "symmetricKey"]], id: "sensor-7", isGroup: false, hubHostName: "localhost",
                now: Date()),
            ifMatch: good.etag)
        #expect(replaced.etag != good.etag)
        #expect(replaced.created == good.created)
    }

    @Test func theInProcessEnrollmentHelpersMakeWhatDevicesRegisterWith() throws {
        var logger = Logger(label: "test")
        logger.logLevel = .error
        let localHub = try LocalHub(configuration: .init(mqttPort: 0, httpsPort: 0, blobPort: 0), logger: logger)
        let key = try localHub.enrollDevice(
            registrationId: "sensor-9", deviceId: "device-9", initialDesired: ["rate": 2])
        let identity = try Self.credentials(localHub.hub, "sensor-9", key: key).authenticated(by: localHub.hub)
        #expect(localHub.registrationCount(of: "sensor-9") == 0)
        _ = try Self.registerAndPoll(localHub.hub, identity)
        #expect(localHub.registrationCount(of: "sensor-9") == 1)
        #expect(localHub.hub.identity(IdentityKey(deviceId: "device-9"))?.desired.properties == ["rate": 2])

        let groupKey = try localHub.enrollGroup("fleet-9")
        let derived = try #require(
            ProvisioningProtocol.derivedDeviceKey(groupKey: groupKey, registrationId: "member-9"))
        #expect(
            try Self.credentials(localHub.hub, "member-9", key: derived).authenticated(by: localHub.hub)
                .enrollmentGroupId == "fleet-9")
        #expect(throws: LocalHubError.self) { _ = try localHub.enrollDevice(registrationId: "Bad Id") }
    }

    @Test func enrollmentsRegistrationsAndTheScopeSurviveARestart() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "localhub-dps-\(UUID().uuidString)"
        ).path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var logger = Logger(label: "test")
        logger.logLevel = .error
        let configuration = LocalHub.Configuration(mqttPort: 0, httpsPort: 0, blobPort: 0, dataDirectory: directory)

        let first = try LocalHub(configuration: configuration, logger: logger)
        _ = try await first.start()
        let key = try #require(
            try Self.put(first.hub, "sensor-8", ["attestation": ["type": "symmetricKey"]]).attestation.primaryKey)
        _ = try Self.put(first.hub, "fleet", group: true, ["attestation": ["type": "symmetricKey"]])
        let identity = try Self.credentials(first.hub, "sensor-8", key: key).authenticated(by: first.hub)
        _ = try Self.registerAndPoll(first.hub, identity)
        let scope = first.idScope
        let connectionString = first.provisioningServiceConnectionString
        await first.stop()

        let scopeFile = try String(contentsOfFile: directory + "/dps-id-scope", encoding: .utf8)
        #expect(scopeFile.trimmingCharacters(in: .whitespacesAndNewlines) == scope)
        let mode =
            try FileManager.default.attributesOfItem(atPath: directory + "/provisioning-service-connection-string")[
                .posixPermissions] as? Int
        #expect(mode == 0o600)
        #expect(connectionString.contains("SharedAccessKeyName=provisioningserviceowner"))

        let second = try LocalHub(configuration: configuration, logger: logger)
        #expect(second.idScope == scope)
        #expect(second.provisioningServiceConnectionString == connectionString)
        #expect(try second.hub.provisioning.get("sensor-8", isGroup: false).attestation.primaryKey == key)
        #expect(try second.hub.provisioning.get("fleet", isGroup: true).isGroup)
        #expect(second.hub.provisioning.registration("sensor-8")?.registrationCount == 1)
        #expect(second.hub.identity(IdentityKey(deviceId: "sensor-8")) != nil)
    }
}

extension ConnectCredentials {
    func authenticated(by hub: Hub) throws -> ProvisioningIdentity {
        try hub.provisioning.authenticate(self).get()
    }

    func refusal(by hub: Hub) -> ConnackPacket.ReturnCode? {
        if case .failure(let code) = hub.provisioning.authenticate(self) { return code }
        return nil
    }
}
