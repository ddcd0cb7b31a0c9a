import Foundation
import IoTHubDevice
import IoTHubProtocol
import Testing

@testable import LocalHub

/// IoT Plug and Play with the Swift client against a real LocalHub: the configuration's
/// `modelId` reaches the hub's twin, and each convention (component telemetry, component
/// properties, writable-property acknowledgements, component commands) round-trips.
@Suite(.serialized, .timeLimit(.minutes(3))) struct PlugAndPlayTests {
    static let model = "dtmi:com:example:TemperatureController;2"
    static let dev1 = IdentityKey(deviceId: "dev1")

    /// Whether the hub has the client's subscription to `filter` (the client subscribes in the
    /// background when a stream is first asked for).
    private static func subscribed(_ fixture: HubFixture, to filter: String) async -> Bool {
        await HubFixture.eventually { fixture.hub.identity(dev1)?.subscriptions[filter] != nil }
    }

    @Test func theConfigurationRefusesAModelIdThatIsNotADTMIOrComesTwice() {
        for configuration in [
            DeviceClientConfiguration(modelId: "com:example:Thermostat;1"),
            DeviceClientConfiguration(modelId: "dtmi:com:example:Thermostat"),
            DeviceClientConfiguration(productInfo: "dtmi:com:example:Other;1", modelId: Self.model),
        ] {
            #expect {
                try configuration.validate()
            } throws: { error in
                guard case .valueError(let field, _) = error as? IoTHubError else { return false }
                return field == "model_id"
            }
        }
        #expect(DeviceClientConfiguration(productInfo: " app/1", modelId: Self.model).announcedModelId == Self.model)
        #expect(DeviceClientConfiguration(productInfo: "dtmi:a:b;1").announcedModelId == "dtmi:a:b;1")
        #expect(DeviceClientConfiguration(productInfo: " app/1").announcedModelId == nil)
    }

    @Test func theModelIdIsInTheHubsTwinAndOnEachTelemetryMessage() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client { $0.modelId = Self.model }
            try await client.connect()
            let record = try #require(fixture.hub.identity(Self.dev1))
            #expect(record.modelId == Self.model)
            #expect(RegistryJSON.twin(record, connected: true)["modelId"] == .string(Self.model))
            #expect(fixture.hub.connections().first?.modelId == Self.model)

            var message = Message(payload: Data(#"{"temperature":21.5}"#.utf8), properties: ["unit": "C"])
            message.componentName = "thermostat1"
            try await client.send(message)
            try await client.send(Message(payload: Data(#"{"workingSet":7}"#.utf8)))
            let telemetry = fixture.telemetry
            #expect(telemetry.map(\.componentName) == ["thermostat1", nil])
            #expect(telemetry.map(\.modelId) == [Self.model, Self.model])
            #expect(telemetry.first?.message.properties == ["unit": "C"], "$.sub is a system property at the hub")
            #expect(telemetry.first?.rawProperties.contains("%24.sub=thermostat1") == true)
            let json = LocalRoutes.telemetryJSON(try #require(telemetry.first), sequenceNumber: 1)
            #expect(json["componentName"] == "thermostat1" && json["modelId"] == .string(Self.model))
            await client.shutdown()

            // Each CONNECT sets the model id: one without any leaves the twin with "".
            let plain = try fixture.client()
            try await plain.connect()
            let after = try #require(fixture.hub.identity(Self.dev1))
            #expect(after.modelId == nil)
            #expect(RegistryJSON.twin(after, connected: true)["modelId"] == "")
            await plain.shutdown()
        }
    }

    @Test func componentPropertiesAcknowledgementsAndCommandsRoundTrip() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client { $0.modelId = Self.model }
            try await client.connect()
            // Component properties: "__t": "c" in a plain reported patch.
            _ = try await client.updateReportedProperties([
                "thermostat1": ["__t": "c", "maxTempSinceLastReboot": 38.5]
            ])
            // A writable property: desired from the hub, acknowledged with ac/av/ad/value.
            let patches = client.desiredPropertiesPatches()
            #expect(await Self.subscribed(fixture, to: TopicFilter.desiredPropertiesPatches))
            let updated = try fixture.hub.patchDesired(
                Self.dev1, patch: ["thermostat1": ["__t": "c", "targetTemperature": 25.5]], tags: nil, replace: false,
                ifMatch: nil)
            let patch = try #require(await first(of: patches))
            let version = try #require(patch["$version"]?.intValue)
            #expect(version == updated.desired.version)
            #expect(patch["thermostat1"]?["targetTemperature"] == .double(25.5))
            _ = try await client.updateReportedProperties([
                "thermostat1": [
                    "__t": "c",
                    "targetTemperature": ["value": 25.5, "ac": 200, "av": .integer(Int64(version)), "ad": "done"],
                ]
            ])
            let reported = try #require(fixture.hub.identity(Self.dev1)).reported.json
            #expect(reported["thermostat1"]?["__t"] == "c")
            #expect(reported["thermostat1"]?["maxTempSinceLastReboot"] == .double(38.5))
            #expect(reported["thermostat1"]?["targetTemperature"]?["av"] == .integer(Int64(version)))
            #expect(reported["thermostat1"]?["targetTemperature"]?["ac"] == 200)

            // A component's command: the method "thermostat1*getMaxMinReport".
            let requests = client.methodRequests()
            #expect(await Self.subscribed(fixture, to: TopicFilter.methodRequests))
            let hub = fixture.hub
            let call = Task {
                try await hub.invokeMethod(
                    on: Self.dev1, name: PlugAndPlay.methodName(component: "thermostat1", command: "getMaxMinReport"),
                    payload: Data(#""2024-05-01T00:00:00Z""#.utf8), responseTimeout: .seconds(10))
            }
            let request = try #require(await first(of: requests))
            #expect(request.name == "thermostat1*getMaxMinReport")
            try await client.respond(
                MethodResponse(answering: request, status: 200, payload: Data(#"{"maxTemp":30}"#.utf8)))
            let result = try await call.value
            #expect(result.status == 200 && result.payload == Data(#"{"maxTemp":30}"#.utf8))
            await client.shutdown()
        }
    }
}
