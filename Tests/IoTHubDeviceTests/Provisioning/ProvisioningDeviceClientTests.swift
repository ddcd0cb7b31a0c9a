import Crypto
import Foundation
import IoTHubProtocol
import Logging
import SwiftASN1
import Testing
import X509

@testable import IoTHubDevice
@testable import LocalHub

/// The provisioning client against LocalHub's Device Provisioning Service, on ephemeral ports.
@Suite(.serialized, .timeLimit(.minutes(3))) struct ProvisioningDeviceClientTests {
    static func provisioningClient(
        _ fixture: HubFixture, registrationId: String, key: String, over transport: Transport = .tcp
    ) throws -> ProvisioningDeviceClient {
        try ProvisioningDeviceClient.fromSymmetricKey(
            provisioningHost: "localhost", registrationId: registrationId, idScope: fixture.localHub.idScope,
            symmetricKey: key,
            configuration: fixture.configuration(over: transport))
    }

    @Test(arguments: Transport.allCases) func anIndividualEnrollmentIsAssignedAndItsDeviceSendsTelemetry(
        over transport: Transport
    ) async throws {
        try await HubFixture.with(devices: []) { fixture in
            let key = try fixture.localHub.enrollDevice(registrationId: "sensor-1", deviceId: "sensor-1-device")
            let provisioning = try Self.provisioningClient(
                fixture, registrationId: "sensor-1", key: key, over: transport)
            let result = try await provisioning.register()
            #expect(result.status == "assigned")
            #expect(result.assignedHub == "localhost")
            #expect(result.deviceId == "sensor-1-device")
            #expect(result.substatus == "initialAssignment")
            #expect(result.registrationId == "sensor-1")
            #expect(!result.operationId.isEmpty)
            #expect(result.createdDateTimeUtc != nil)
            #expect(result.payload == nil)
            #expect(fixture.localHub.registrationCount(of: "sensor-1") == 1)

            let client = try IoTHubDeviceClient(
                hostName: try #require(result.assignedHub), deviceId: try #require(result.deviceId),
                credential: provisioning.deviceCredential,
                configuration: fixture.configuration(over: transport))
            try await client.send(Message(payload: Data("provisioned".utf8)))
            #expect(fixture.telemetry.last?.deviceId == "sensor-1-device")
            await client.shutdown()

            let again = try await provisioning.register()
            #expect(again.substatus == "reprovisionedToInitialAssignment")
            #expect(fixture.localHub.registrationCount(of: "sensor-1") == 2)
        }
    }

    @Test func aGroupDeviceRegistersWithTheKeyDerivedFromTheGroupKey() async throws {
        try await HubFixture.with(devices: []) { fixture in
            let groupKey = try fixture.localHub.enrollGroup("floor-3")
            let key = try ProvisioningDeviceClient.deriveDeviceKey(groupKey: groupKey, registrationId: "lamp-7")
            #expect(key != groupKey)
            let result = try await Self.provisioningClient(fixture, registrationId: "lamp-7", key: key).register()
            #expect(result.deviceId == "lamp-7")
            let client = try IoTHubDeviceClient.fromSymmetricKey(
                key, hostName: try #require(result.assignedHub), deviceId: "lamp-7",
                configuration: fixture.configuration())
            try await client.connect()
            await client.shutdown()

            // The group key itself is not the device's key.
            let wrong = try Self.provisioningClient(fixture, registrationId: "lamp-8", key: groupKey)
            await #expect(throws: IoTHubError.credentialError("DPS refused the credentials of 'lamp-8' (CONNACK 5)")) {
                try await wrong.register()
            }
        }
    }

    @Test func theDerivedKeyIsHMACSHA256OfTheRegistrationIdUnderTheDecodedGroupKey() throws {
        // Computed independently with CryptoKit's HMAC.
        let groupKey = Data((0..<32).map { UInt8($0) }).base64EncodedString()
        let expected = Data(
            HMAC<SHA256>.authenticationCode(
                for: Data("device-01".utf8), using: SymmetricKey(data: Data((0..<32).map { UInt8($0) })))
        )
        .base64EncodedString()
        #expect(
            try ProvisioningDeviceClient.deriveDeviceKey(groupKey: groupKey, registrationId: "device-01") == expected)
        #expect(throws: IoTHubError.valueError(field: "group key", reason: "is not a base64-encoded key")) {
            try ProvisioningDeviceClient.deriveDeviceKey(groupKey: "not base64!", registrationId: "device-01")
        }
    }

    @Test(arguments: Transport.allCases) func anX509IndividualEnrollmentIsAssigned(over transport: Transport)
        async throws
    {
        try await HubFixture.with(devices: []) { fixture in
            let key = P256.Signing.PrivateKey()
            let name = try DistinguishedName { CommonName("camera-2") }
            let certificate = try Certificate(
                version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
                notValidBefore: Date().addingTimeInterval(-60),
                notValidAfter: Date().addingTimeInterval(3600), issuer: name, subject: name,
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: .init(), issuerPrivateKey: .init(key))
            let pem = try certificate.serializeAsPEM().pemString
            let body: JSONValue = [
                "attestation": [
                    "type": "x509", "x509": ["clientCertificates": ["primary": ["certificate": .string(pem)]]],
                ]
            ]
            _ = try fixture.hub.provisioning.put(
                ProvisioningJSON.readEnrollment(
                    body, id: "camera-2", isGroup: false, hubHostName: fixture.hub.hostName, now: Date()), ifMatch: nil)
            let x509 = X509Credential(certificatePEM: pem, privateKeyPEM: key.pemRepresentation)
            let provisioning = try ProvisioningDeviceClient.fromX509Certificate(
                provisioningHost: "localhost", registrationId: "camera-2", idScope: fixture.localHub.idScope,
                x509: x509,
                configuration: fixture.configuration(over: transport))
            let result = try await provisioning.register()
            #expect(result.deviceId == "camera-2")
            let client = try IoTHubDeviceClient.fromX509Certificate(
                x509, hostName: try #require(result.assignedHub), deviceId: "camera-2",
                configuration: fixture.configuration(over: transport))
            try await client.send(Message(payload: Data("x509".utf8)))
            #expect(fixture.telemetry.last?.deviceId == "camera-2")
            await client.shutdown()
        }
    }

    @Test func theCustomPayloadGoesToDPSAndComesBack() async throws {
        try await HubFixture.with(devices: []) { fixture in
            let key = try fixture.localHub.enrollDevice(registrationId: "meter-4")
            let payload: JSONValue = ["modelId": "dtmi:example:meter;1", "floor": 3]
            let result = try await Self.provisioningClient(fixture, registrationId: "meter-4", key: key).register(
                payload: payload)
            #expect(result.payload == payload)
        }
    }

    @Test func aDisabledEnrollmentIsAClientErrorAndCreatesNoDevice() async throws {
        try await HubFixture.with(devices: []) { fixture in
            let key = try fixture.localHub.enrollDevice(registrationId: "retired-1", enabled: false)
            let provisioning = try Self.provisioningClient(fixture, registrationId: "retired-1", key: key)
            await #expect(
                throws: IoTHubError.clientError("DPS answered 'disabled': the enrollment of 'retired-1' is disabled")
            ) {
                try await provisioning.register()
            }
            #expect(fixture.hub.identity(IdentityKey(deviceId: "retired-1")) == nil)
        }
    }

    @Test func aFailedRegistrationIsAServiceErrorWithDPSsReason() async throws {
        try await HubFixture.with(devices: []) { fixture in
            // A group device's id is its registration id; one with ':' is valid at DPS but not
            // in the hub's registry: DPS answers status 'failed'.
            let groupKey = try fixture.localHub.enrollGroup("odd-group")
            let key = try ProvisioningDeviceClient.deriveDeviceKey(groupKey: groupKey, registrationId: "odd:1")
            let provisioning = try Self.provisioningClient(fixture, registrationId: "odd:1", key: key)
            await #expect {
                try await provisioning.register()
            } throws: { error in
                guard case .serviceError(let status, let message, _)? = error as? IoTHubError else { return false }
                return (400...599).contains(status) && message.contains("the registration of 'odd:1' failed")
                    && message.contains("error code")
            }
            #expect(fixture.hub.identity(IdentityKey(deviceId: "odd:1")) == nil)
        }
    }

    @Test func aWrongKeyOrAnUnknownRegistrationIsACredentialError() async throws {
        try await HubFixture.with(devices: []) { fixture in
            _ = try fixture.localHub.enrollDevice(registrationId: "sensor-9")
            let otherKey = Data(repeating: 7, count: 32).base64EncodedString()
            for registrationId in ["sensor-9", "never-enrolled"] {
                let provisioning = try Self.provisioningClient(fixture, registrationId: registrationId, key: otherKey)
                await #expect(
                    throws: IoTHubError.credentialError(
                        "DPS refused the credentials of '\(registrationId)' (CONNACK 5)")
                ) {
                    try await provisioning.register()
                }
            }
            #expect(fixture.localHub.registrationCount(of: "sensor-9") == 0)
        }
    }

    @Test func throttlingIsWaitedOutAsRetryAfterSays() async throws {
        try await HubFixture.with(devices: []) { fixture in
            let key = try fixture.localHub.enrollDevice(registrationId: "busy-1")
            var faults = fixture.hub.faults
            faults.throttleNextOperations = 2
            fixture.hub.setFaults(faults)
            let result = try await Self.provisioningClient(fixture, registrationId: "busy-1", key: key).register()
            #expect(result.status == "assigned")
            #expect(fixture.hub.faults.throttleNextOperations == 0)
            #expect(fixture.localHub.registrationCount(of: "busy-1") == 1)
        }
    }

    @Test func noAnswerWithinTheOperationTimeoutIsAnOperationTimeout() async throws {
        // DPS keeps answering 429 with retry-after=1: the registration ends at the operation timeout.
        try await HubFixture.with(devices: []) { fixture in
            let key = try fixture.localHub.enrollDevice(registrationId: "slow-1")
            var faults = fixture.hub.faults
            faults.throttleNextOperations = 100
            fixture.hub.setFaults(faults)
            var configuration = fixture.configuration()
            configuration.operationTimeout = .seconds(2)
            let provisioning = try ProvisioningDeviceClient.fromSymmetricKey(
                provisioningHost: "localhost", registrationId: "slow-1", idScope: fixture.localHub.idScope,
                symmetricKey: key,
                configuration: configuration)
            await #expect(
                throws: IoTHubError.operationTimeout("DPS did not finish the registration within 2.0 seconds")
            ) {
                try await provisioning.register()
            }
        }
    }

    @Test func badArgumentsAreValueErrors() throws {
        let key = Data(repeating: 1, count: 32).base64EncodedString()
        for (registrationId, idScope, symmetricKey, field) in [
            ("Upper-Case", "0ne00000001", key, "registration_id"), ("-dash", "0ne00000001", key, "registration_id"),
            ("ok-1", "", key, "id_scope"), ("ok-1", "0ne/1", key, "id_scope"),
            ("ok-1", "0ne00000001", "not base64!", "SharedAccessKey"),
        ] {
            #expect {
                try ProvisioningDeviceClient.fromSymmetricKey(
                    registrationId: registrationId, idScope: idScope, symmetricKey: symmetricKey)
            } throws: { error in
                if case .valueError(field, _)? = error as? IoTHubError { return true }
                return false
            }
        }
    }

    @Test func theWireShapesAreDPSs() throws {
        #expect(
            ProvisioningWire.username(idScope: "0ne1", registrationId: "r-1", productInfo: "")
                == "0ne1/registrations/r-1/api-version=2019-03-31&ClientVersion=\(PercentEncoding.encode(UserAgent.string))"
        )
        #expect(ProvisioningWire.registerTopic(rid: "7") == "$dps/registrations/PUT/iotdps-register/?$rid=7")
        #expect(
            ProvisioningWire.operationStatusTopic(rid: "8", operationId: "4.abc/def")
                == "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=8&operationId=4.abc%2Fdef")
        let response = try #require(
            ProvisioningWire.Response(topic: "$dps/registrations/res/202/?$rid=1&retry-after=3", body: Data()))
        #expect(response.status == 202 && response.rid == "1" && response.retryAfterSeconds == 3)
        #expect(ProvisioningWire.Response(topic: "$dps/registrations/res/abc/?$rid=1", body: Data()) == nil)
        #expect(ProvisioningWire.Response(topic: "$dps/registrations/res/200/?retry-after=1", body: Data()) == nil)
        #expect(ProvisioningWire.Response(topic: "$iothub/twin/res/200/?$rid=1", body: Data()) == nil)
    }
}
