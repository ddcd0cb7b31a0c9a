import IoTHubProtocol
import Testing

@Suite struct MQTTIdentityTests {
    @Test func deviceUsername() {
        let identity = MQTTIdentity(hostName: "hub.azure-devices.net", deviceId: "d1")
        #expect(identity.clientId == "d1")
        #expect(
            identity.username
                == "hub.azure-devices.net/d1/?api-version=2019-10-01&DeviceClientType=\(PercentEncoding.encode(UserAgent.string))"
        )
        #expect(UserAgent.string.hasPrefix("iothub-sidecar/"))
    }

    @Test func moduleUsernameAppendsProductInfo() {
        let identity = MQTTIdentity(hostName: "h", deviceId: "d1", moduleId: "m1", productInfo: " my-app/1.0")
        #expect(identity.clientId == "d1/m1")
        #expect(identity.username.hasPrefix("h/d1/m1/?api-version=2019-10-01&DeviceClientType="))
        let parsed = MQTTUsername(parsing: identity.username)
        #expect(parsed?.hostName == "h")
        #expect(parsed?.clientId == "d1/m1")
        #expect(parsed?.parameters["DeviceClientType"] == UserAgent.string + " my-app/1.0")
    }

    @Test func modelIdForPlugAndPlay() {
        let identity = MQTTIdentity(hostName: "h", deviceId: "d", productInfo: "dtmi:com:example:Thermostat;1")
        #expect(
            identity.username
                == "h/d/?api-version=2020-09-30&DeviceClientType=\(PercentEncoding.encode(UserAgent.string))&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1"
        )
        #expect(MQTTUsername(parsing: identity.username)?.parameters["model-id"] == "dtmi:com:example:Thermostat;1")
    }

    /// A model id of its own: IoT Hub's Plug and Play user name, with the product info still
    /// in the user agent.
    @Test func modelIdGivenApartFromProductInfo() {
        let identity = MQTTIdentity(
            hostName: "h", deviceId: "d", moduleId: "m", productInfo: " app/2", modelId: "dtmi:com:example:Meter;3")
        #expect(
            identity.username
                == "h/d/m/?api-version=2020-09-30&DeviceClientType=\(PercentEncoding.encode(UserAgent.string + " app/2"))&model-id=dtmi%3Acom%3Aexample%3AMeter%3B3"
        )
        let parsed = MQTTUsername(parsing: identity.username)
        #expect(parsed?.parameters["model-id"] == "dtmi:com:example:Meter;3")
        #expect(parsed?.parameters["DeviceClientType"] == UserAgent.string + " app/2")
    }

    @Test func parsesUsernamesOfOtherSDKs() {
        let python =
            "hub.azure-devices.net/dev/?api-version=2019-10-01&DeviceClientType=azure-iot-device-iothub-py%2F2.14.0%28%29"
        let parsed = MQTTUsername(parsing: python)
        #expect(parsed?.clientId == "dev")
        #expect(parsed?.parameters["api-version"] == "2019-10-01")
        #expect(parsed?.parameters["DeviceClientType"] == "azure-iot-device-iothub-py/2.14.0()")
        #expect(MQTTUsername(parsing: "h/d/?")?.parameters == [:])
        #expect(MQTTUsername(parsing: "no-slash") == nil)
        #expect(MQTTUsername(parsing: "h/d") == nil)
        #expect(MQTTUsername(parsing: "/d/?x=1") == nil)
        #expect(MQTTUsername(parsing: "h//?x=1") == nil)
        #expect(MQTTUsername(parsing: "h/d/?novalue") == nil)
    }
}
