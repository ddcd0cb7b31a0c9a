import Foundation
import IoTHubProtocol
import Logging
import NIOCore
import Testing

@testable import LocalHub

/// DPS's device-side wire format as LocalHub reads and writes it.
@Suite struct ProvisioningProtocolTests {
    @Test(arguments: ["dev1", "a", "my-device.01_x:y", String(repeating: "a", count: 128), "0ne"])
    func validRegistrationIds(_ id: String) {
        #expect(ProvisioningProtocol.isValidRegistrationId(id))
    }

    @Test(arguments: [
        "", "Dev1", "-lead", "trail-", ".dot", "with space", "a/b", "a+b", "ümlaut", String(repeating: "a", count: 129),
        "a#b",
    ])
    func invalidRegistrationIds(_ id: String) {
        #expect(!ProvisioningProtocol.isValidRegistrationId(id))
    }

    @Test func theUsernameOfTheDeviceSDKsParses() throws {
        let parsed = try #require(
            ProvisioningProtocol.Username(
                parsing:
                    "0ne00ABCDEF/registrations/dev-1/api-version=2019-03-31&ClientVersion=azure-iot-provisioning-devicesdk%2F2.14.0"
            ))
        #expect(parsed.idScope == "0ne00ABCDEF")
        #expect(parsed.registrationId == "dev-1")
        #expect(parsed.parameters["api-version"] == "2019-03-31")
        #expect(parsed.parameters["ClientVersion"] == "azure-iot-provisioning-devicesdk/2.14.0")
        // Without the query, as some clients send it.
        #expect(ProvisioningProtocol.Username(parsing: "0ne1/registrations/dev-1")?.registrationId == "dev-1")
    }

    @Test(arguments: [
        "localhost/dev1/?api-version=2021-04-12", "localhost/registrations/?api-version=2021-04-12",
        "localhost/dev1/mod1/?api-version=2021-04-12", "0ne1/registration/dev1/api-version=1", "/registrations/dev1/",
        "0ne1/registrations//x",
    ])
    func iotHubAndMalformedUsernamesAreNotProvisioningOnes(_ username: String) {
        #expect(ProvisioningProtocol.Username(parsing: username) == nil)
    }

    @Test func requestTopics() {
        #expect(
            ProvisioningProtocol.Request(topic: "$dps/registrations/PUT/iotdps-register/?$rid=7")
                == .register(requestId: "7"))
        #expect(
            ProvisioningProtocol.Request(
                topic: "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=8&operationId=4.abc.d-e")
                == .operationStatus(requestId: "8", operationId: "4.abc.d-e"))
        #expect(
            ProvisioningProtocol.Request(topic: "$dps/registrations/PUT/iotdps-register/?$rid=a%20b")
                == .register(requestId: "a b"))
        for bad in [
            "$dps/registrations/PUT/iotdps-register/", "$dps/registrations/PUT/iotdps-register/?rid=1",
            "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1",
            "$dps/registrations/PUT/iotdps-register/?$rid=1&$rid=2",
            "devices/dev1/messages/events/", "$dps/registrations/PUT/iotdps-register/?$rid=",
        ] {
            #expect(ProvisioningProtocol.Request(topic: bad) == nil, "\(bad)")
        }
    }

    @Test func responseTopics() {
        #expect(
            ProvisioningProtocol.responseTopic(status: 202, requestId: "1", retryAfter: 3)
                == "$dps/registrations/res/202/?$rid=1&retry-after=3")
        #expect(
            ProvisioningProtocol.responseTopic(status: 200, requestId: "a&b", retryAfter: nil)
                == "$dps/registrations/res/200/?$rid=a%26b")
    }

    @Test func theGroupKeyDerivationIsHMACSHA256OfTheRegistrationId() throws {
        // Computed independently: base64(HMAC-SHA256(base64decode(key), "sensor-1")).
        let groupKey = Data(repeating: 0x01, count: 32).base64EncodedString()
        #expect(
            ProvisioningProtocol.derivedDeviceKey(groupKey: groupKey, registrationId: "sensor-1")
                == "7bWNAToeizQg4Y7dRraRMEpcS6zw8IFfWWtsJvPuONI=")
        #expect(ProvisioningProtocol.derivedDeviceKey(groupKey: "not base64!", registrationId: "x") == nil)
    }

    @Test func registrationRequests() throws {
        let full = try ProvisioningProtocol.RegistrationRequest(
            parsing: Data(#"{"registrationId":"d1","payload":{"a":1}}"#.utf8))
        #expect(full == .init(registrationId: "d1", payload: ["a": 1]))
        #expect(
            try ProvisioningProtocol.RegistrationRequest(parsing: Data(#"{"registrationId":"d1","payload":null}"#.utf8))
                .payload == nil)
        #expect(
            try ProvisioningProtocol.RegistrationRequest(parsing: Data(" ".utf8))
                == .init(registrationId: nil, payload: nil))
        #expect(throws: ProvisioningFailure.self) {
            try ProvisioningProtocol.RegistrationRequest(parsing: Data("[1]".utf8))
        }
        #expect(throws: ProvisioningFailure.self) {
            try ProvisioningProtocol.RegistrationRequest(parsing: Data(#"{"registrationId":5}"#.utf8))
        }
        let huge = Data(("{\"payload\":\"" + String(repeating: "x", count: 70_000) + "\"}").utf8)
        #expect { try ProvisioningProtocol.RegistrationRequest(parsing: huge) } throws: {
            ($0 as? ProvisioningFailure)?.status == 413
        }
    }
}
