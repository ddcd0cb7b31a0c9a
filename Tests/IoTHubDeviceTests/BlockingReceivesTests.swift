import Foundation
import IoTHubDevice
import IoTHubProtocol
import Testing

@testable import LocalHub

/// The deprecated blocking receives, reached through a protocol the client conforms to: a
/// deprecated method may satisfy a requirement without a warning, so their tests build warning
/// free (Swift Testing refuses deprecated tests, and warnings fail the build).
private protocol BlockingReceives {
    func receiveMessage(timeout: Duration) async throws(IoTHubError) -> Message?
    func receiveMethodRequest(name: String?, timeout: Duration) async throws(IoTHubError) -> MethodRequest?
    func receiveTwinDesiredPropertiesPatch(timeout: Duration) async throws(IoTHubError) -> JSONValue?
}

extension IoTHubDeviceClient: BlockingReceives {}

extension BlockingReceives {
    func receiveMethodRequest(timeout: Duration) async throws(IoTHubError) -> MethodRequest? {
        try await receiveMethodRequest(name: nil, timeout: timeout)
    }
}

/// The Python SDK's deprecated blocking receives (`receive_message`,
/// `receive_method_request`, `receive_twin_desired_properties_patch`), against LocalHub.
@Suite(.timeLimit(.minutes(2))) struct BlockingReceivesTests {
    private static let dev1 = IdentityKey(deviceId: "dev1")

    private static func subscribed(_ fixture: HubFixture, to filter: String) async -> Bool {
        await HubFixture.eventually { fixture.hub.identity(dev1)?.subscriptions[filter] != nil }
    }

    @Test func receiveMessageReturnsEachMessageOnceInOrderAndNilWhenNoneCame() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client()
            let receives: any BlockingReceives = client
            #expect(try await receives.receiveMessage(timeout: .milliseconds(100)) == nil)
            #expect(await Self.subscribed(fixture, to: TopicFilter.cloudToDevice(deviceId: "dev1")))
            for index in 1...3 {
                _ = try fixture.hub.enqueueCloudToDevice(
                    to: "dev1", message: Message(payload: Data("m\(index)".utf8), messageId: "m\(index)"),
                    timeToLive: nil)
            }
            var received: [String?] = []
            for _ in 1...3 { received.append(try await receives.receiveMessage(timeout: .seconds(10))?.messageId) }
            #expect(received == ["m1", "m2", "m3"])
            #expect(try await receives.receiveMessage(timeout: .zero) == nil, "a message was handed out twice")
            await client.shutdown()
            await #expect(throws: IoTHubError.self) { _ = try await receives.receiveMessage(timeout: .zero) }
        }
    }

    @Test func aMethodAskedForByNameGoesOnlyToCallersThatNameIt() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client()
            let receives: any BlockingReceives = client
            #expect(try await receives.receiveMethodRequest(name: "reboot", timeout: .zero) == nil)
            #expect(await Self.subscribed(fixture, to: TopicFilter.methodRequests))
            let hub = fixture.hub
            let reboot = Task {
                try await hub.invokeMethod(
                    on: Self.dev1, name: "reboot", payload: Data(#"{"delay":1}"#.utf8), responseTimeout: .seconds(10))
            }
            // "reboot" goes out first, so that a call without a name would get it if names
            // were not kept apart.
            try await Task.sleep(for: .milliseconds(300))
            let status = Task {
                try await hub.invokeMethod(
                    on: Self.dev1, name: "status", payload: Data("1".utf8), responseTimeout: .seconds(10))
            }
            let unnamed = try #require(try await receives.receiveMethodRequest(timeout: .seconds(10)))
            #expect(unnamed.name == "status")
            let named = try #require(try await receives.receiveMethodRequest(name: "reboot", timeout: .seconds(10)))
            #expect(named.name == "reboot")
            #expect(named.payload == Data(#"{"delay":1}"#.utf8))
            try await client.respond(MethodResponse(answering: unnamed, status: 200, payload: Data("2".utf8)))
            try await client.respond(MethodResponse(answering: named, status: 202, payload: Data("{}".utf8)))
            #expect(try await status.value.status == 200)
            #expect(try await reboot.value.status == 202)
            #expect(try await receives.receiveMethodRequest(timeout: .zero) == nil)
            await client.shutdown()
        }
    }

    @Test func receiveTwinDesiredPropertiesPatchReturnsThePatchesInOrder() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client()
            let receives: any BlockingReceives = client
            #expect(try await receives.receiveTwinDesiredPropertiesPatch(timeout: .zero) == nil)
            #expect(await Self.subscribed(fixture, to: TopicFilter.desiredPropertiesPatches))
            _ = try fixture.hub.patchDesired(Self.dev1, patch: ["mode": "eco"], tags: nil, replace: false, ifMatch: nil)
            _ = try fixture.hub.patchDesired(Self.dev1, patch: ["mode": "max"], tags: nil, replace: false, ifMatch: nil)
            #expect(
                try await receives.receiveTwinDesiredPropertiesPatch(timeout: .seconds(10)) == [
                    "mode": "eco", "$version": 2,
                ])
            #expect(
                try await receives.receiveTwinDesiredPropertiesPatch(timeout: .seconds(10)) == [
                    "mode": "max", "$version": 3,
                ])
            #expect(try await receives.receiveTwinDesiredPropertiesPatch(timeout: .zero) == nil)
            await client.shutdown()
        }
    }
}
