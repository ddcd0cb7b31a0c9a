import Foundation
import IoTHubProtocol
import Testing

@Suite struct PlugAndPlayTests {
    @Test(arguments: [
        "dtmi:com:example:Thermostat;1", "dtmi:com:example:TemperatureController;2",
        "dtmi:azure:DeviceManagement:DeviceInformation;1", "dtmi:a;999999999", "dtmi:com:example:Meter;1.5",
        "dtmi:Com_1:x9;3", "dtmi:a:b_c;1.999999",
    ])
    func aDTMIIsAModelId(_ modelId: String) throws {
        try PlugAndPlay.validateModelId(modelId)
    }

    @Test(arguments: [
        ("", "start with 'dtmi:'"), ("com:example:Thermostat;1", "start with 'dtmi:'"),
        ("DTMI:com:example:Thermostat;1", "start with 'dtmi:'"),
        ("dtmi:com:example:Thermostat", "';' and a version"), ("dtmi:;1", "segment (number 1)"),
        ("dtmi:com::Thermostat;1", "segment (number 2)"), ("dtmi:1com:Thermostat;1", "segment (number 1)"),
        ("dtmi:_com:Thermostat;1", "segment (number 1)"), ("dtmi:com_:Thermostat;1", "segment (number 1)"),
        ("dtmi:com:Ther-mostat;1", "segment (number 2)"), ("dtmi:com:Thérmostat;1", "segment (number 2)"),
        ("dtmi:com:Thermostat;0", "version"), ("dtmi:com:Thermostat;01", "version"),
        ("dtmi:com:Thermostat;1234567890", "version"), ("dtmi:com:Thermostat;1.", "version"),
        ("dtmi:com:Thermostat;1.0", "version"), ("dtmi:com:Thermostat;1.1234567", "version"),
        ("dtmi:com:Thermostat;1.2.3", "version"), ("dtmi:com:Thermostat;1#frag", "version"),
        ("dtmi:com:Thermostat;", "version"),
    ])
    func anythingElseIsRefusedSayingWhy(_ modelId: String, _ reason: String) {
        #expect {
            try PlugAndPlay.validateModelId(modelId, field: "model_id")
        } throws: { error in
            guard case .valueError(let field, let text) = error as? IoTHubError else { return false }
            return field == "model_id" && text.contains(reason)
        }
    }

    @Test func aModelIdIsAtMost2048Characters() throws {
        let longest = "dtmi:" + String(repeating: "a", count: 2048 - "dtmi:".count - 2) + ";1"
        #expect(longest.count == 2048)
        try PlugAndPlay.validateModelId(longest)
        #expect(throws: IoTHubError.self) { try PlugAndPlay.validateModelId("dtmi:a" + longest.dropFirst(5)) }
    }

    @Test func componentNamesAreDTDLNames() {
        for name in ["thermostat1", "deviceInformation", "a", "A_b9", String(repeating: "x", count: 64)] {
            #expect(PlugAndPlay.isComponentName(name), "\(name)")
        }
        for name in [
            "", "1thermostat", "_x", "x_", "thermo stat", "thermostat*1", "$.sub", String(repeating: "x", count: 65),
        ] {
            #expect(!PlugAndPlay.isComponentName(name), "\(name)")
            #expect(throws: IoTHubError.self) { try PlugAndPlay.validateComponentName(name, field: "component") }
        }
    }

    @Test func aComponentsCommandIsTheMethodComponentStarCommand() {
        #expect(
            PlugAndPlay.methodName(component: "thermostat1", command: "getMaxMinReport")
                == "thermostat1*getMaxMinReport")
        #expect(PlugAndPlay.methodName(component: nil, command: "reboot") == "reboot")
    }

    /// The component name travels as the property `$.sub`, where the Python SDK's samples put
    /// it (`custom_properties["$.sub"]`), so the topic is the one those samples produce.
    @Test func theComponentNameIsTheSubProperty() throws {
        var message = Message(payload: Data("{}".utf8), contentType: "application/json", properties: ["unit": "C"])
        #expect(message.componentName == nil)
        message.componentName = "thermostat1"
        #expect(message.properties["$.sub"] == "thermostat1")
        #expect(message.telemetryPropertyBag.encoded == "%24.ct=application%2Fjson&%24.sub=thermostat1&unit=C")
        let received = Message(payload: message.payload, propertyBag: message.telemetryPropertyBag)
        #expect(received.componentName == "thermostat1")
        message.componentName = nil
        #expect(message.properties == ["unit": "C"])
    }
}
