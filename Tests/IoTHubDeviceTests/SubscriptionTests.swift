import Foundation
import IoTHubDevice
import IoTHubProtocol
import Testing

@testable import LocalHub

/// Listeners switch features on and off, as setting a Python handler and setting it to `None`
/// do: the last listener going unsubscribes (the hub sees the UNSUBSCRIBE), a listener coming
/// back subscribes again, across reconnects only what is wanted stays subscribed.
@Suite(.serialized, .timeLimit(.minutes(3))) struct SubscriptionTests {
    private static let device = IdentityKey(deviceId: "dev1")

    private func isSubscribed(_ fixture: HubFixture, _ filter: String) -> Bool {
        fixture.hub.identity(Self.device)?.subscriptions[filter] != nil
    }

    /// While nobody listens, a cloud-to-device message stays queued at the hub (it is not sent,
    /// so the client cannot acknowledge it); a listener that comes back receives it.
    @Test func cloudToDeviceMessagesWaitAtTheHubWhileNobodyListens() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client()
            let filter = TopicFilter.cloudToDevice(deviceId: "dev1")
            do {
                let messages = client.messages()
                #expect(await HubFixture.eventually { isSubscribed(fixture, filter) })
                _ = try fixture.hub.enqueueCloudToDevice(
                    to: "dev1", message: Message(payload: Data("on".utf8), messageId: "while-on"), timeToLive: nil)
                #expect(try #require(await first(of: messages)).messageId == "while-on")
            }
            // The stream is gone: the client unsubscribes and stays connected.
            #expect(await HubFixture.eventually { !isSubscribed(fixture, filter) })
            #expect(client.isConnected && fixture.hub.isConnected(Self.device))
            _ = try fixture.hub.enqueueCloudToDevice(
                to: "dev1", message: Message(payload: Data("off".utf8), messageId: "while-off"), timeToLive: nil)
            let queued = try #require(fixture.hub.identity(Self.device)?.cloudToDevice)
            #expect(queued.map(\.deliveryCount) == [0], "the hub did not send it: nobody listens")

            let messages = client.messages()
            #expect(await HubFixture.eventually { isSubscribed(fixture, filter) })
            let message = try #require(await first(of: messages))
            #expect(message.messageId == "while-off" && message.payload == Data("off".utf8))
            #expect(await HubFixture.eventually { fixture.hub.identity(Self.device)?.cloudToDevice.isEmpty == true })
            await client.shutdown()
        }
    }

    /// While nobody listens for method requests, the hub answers a call at once with
    /// `DeviceNotOnline` (404), as IoT Hub does for a device not subscribed to methods,
    /// instead of the caller waiting for its timeout.
    @Test func methodCallsFailAtOnceWhileNobodyListens() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client()
            do {
                let requests = client.methodRequests()
                #expect(await HubFixture.eventually { isSubscribed(fixture, TopicFilter.methodRequests) })
                _ = requests
            }
            #expect(await HubFixture.eventually { !isSubscribed(fixture, TopicFilter.methodRequests) })
            #expect(client.isConnected)
            do throws(ServiceError) {
                _ = try await fixture.hub.invokeMethod(
                    on: Self.device, name: "reboot", payload: Data("{}".utf8), responseTimeout: .seconds(120))
                Issue.record("the call was answered while nobody listened")
            } catch {
                if case .deviceNotOnline = error {
                } else {
                    Issue.record("the call failed with \(error), not DeviceNotOnline")
                }
            }
            let requests = client.methodRequests()
            #expect(await HubFixture.eventually { isSubscribed(fixture, TopicFilter.methodRequests) })
            let responder = Task {
                for await request in requests {
                    try await client.respond(MethodResponse(answering: request, status: 200, payload: Data()))
                    return request.name
                }
                return ""
            }
            let result = try await fixture.hub.invokeMethod(
                on: Self.device, name: "reboot", payload: Data("{}".utf8), responseTimeout: .seconds(30))
            #expect(result.status == 200)
            #expect(try await responder.value == "reboot")
            await client.shutdown()
        }
    }

    /// A desired-properties listener that starts after patches it missed gets the desired
    /// properties whole, once, with their `$version`.
    @Test func aDesiredPropertiesListenerThatComesBackGetsWhatItMissed() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client()
            let filter = TopicFilter.desiredPropertiesPatches
            do {
                let patches = client.desiredPropertiesPatches()
                #expect(await HubFixture.eventually { isSubscribed(fixture, filter) })
                _ = try fixture.hub.patchDesired(
                    Self.device, patch: ["mode": "eco"], tags: nil, replace: false, ifMatch: nil)
                #expect(await first(of: patches) == ["mode": "eco", "$version": 2])
            }
            #expect(await HubFixture.eventually { !isSubscribed(fixture, filter) })
            _ = try fixture.hub.patchDesired(
                Self.device, patch: ["fan": "high"], tags: nil, replace: false, ifMatch: nil)
            let patches = client.desiredPropertiesPatches()
            #expect(await first(of: patches) == ["mode": "eco", "fan": "high", "$version": 3])
            #expect(isSubscribed(fixture, filter))
            await client.shutdown()
        }
    }

    /// The hub's session outlives the connection (clean session off): a listener that goes while
    /// the client is disconnected is unsubscribed at the next connect, and one still listening
    /// stays subscribed.
    @Test func afterAReconnectOnlyWhatIsWantedStaysSubscribed() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client()
            let cloudToDevice = TopicFilter.cloudToDevice(deviceId: "dev1")
            let requests = client.methodRequests()
            do {
                let messages = client.messages()
                #expect(
                    await HubFixture.eventually {
                        isSubscribed(fixture, cloudToDevice) && isSubscribed(fixture, TopicFilter.methodRequests)
                    })
                await client.disconnect()
                _ = messages
            }
            #expect(isSubscribed(fixture, cloudToDevice), "the hub's session keeps the subscription")
            try await client.connect()
            #expect(await HubFixture.eventually { !isSubscribed(fixture, cloudToDevice) })
            #expect(isSubscribed(fixture, TopicFilter.methodRequests))
            _ = try fixture.hub.enqueueCloudToDevice(
                to: "dev1", message: Message(payload: Data("x".utf8), messageId: "kept"), timeToLive: nil)
            #expect(fixture.hub.identity(Self.device)?.cloudToDevice.map(\.deliveryCount) == [0])
            _ = requests
            await client.shutdown()
        }
    }

    /// A module's input messages switch off the same way: while nobody listens, the hub
    /// refuses to send to the module's inputs (`DeviceNotOnline`, there is no queue).
    @Test func aModuleStopsReceivingInputsWhileNobodyListens() async throws {
        try await HubFixture.with { fixture in
            let module = try fixture.client("dev1", moduleId: "filter")
            let key = IdentityKey(deviceId: "dev1", moduleId: "filter")
            let filter = TopicFilter.moduleInputs(deviceId: "dev1", moduleId: "filter")
            func subscribed() -> Bool { fixture.hub.identity(key)?.subscriptions[filter] != nil }
            do {
                let inputs = module.messages()
                #expect(await HubFixture.eventually { subscribed() })
                _ = inputs
            }
            #expect(await HubFixture.eventually { !subscribed() })
            do throws(ServiceError) {
                _ = try fixture.hub.sendToModuleInput(key, input: "in", message: Message(payload: Data("x".utf8)))
                Issue.record("the hub sent to an input nobody listens to")
            } catch {
                if case .deviceNotOnline = error {} else { Issue.record("refused with \(error), not DeviceNotOnline") }
            }
            let inputs = module.messages()
            #expect(await HubFixture.eventually { subscribed() })
            _ = try fixture.hub.sendToModuleInput(
                key, input: "in", message: Message(payload: Data("back".utf8), messageId: "i2"))
            #expect(await first(of: inputs)?.messageId == "i2")
            await module.shutdown()
        }
    }

    /// A message the hub sends before it sees the UNSUBSCRIBE is acknowledged on arrival (MQTT
    /// acknowledges on receipt); the client keeps it for the next listener. Made certain here:
    /// the hub's session still holds the subscription at the reconnect, and the hub sends what
    /// is queued right after its CONNACK, before the client can unsubscribe.
    @Test func aMessageTheHubSentBeforeItSawTheUnsubscribeGoesToTheNextListener() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client()
            let filter = TopicFilter.cloudToDevice(deviceId: "dev1")
            do {
                let messages = client.messages()
                #expect(await HubFixture.eventually { isSubscribed(fixture, filter) })
                await client.disconnect()
                _ = messages
            }
            _ = try fixture.hub.enqueueCloudToDevice(
                to: "dev1", message: Message(payload: Data("late".utf8), messageId: "in-flight"), timeToLive: nil)
            try await client.connect()
            #expect(await HubFixture.eventually { !isSubscribed(fixture, filter) })
            #expect(
                await HubFixture.eventually { fixture.hub.identity(Self.device)?.cloudToDevice.isEmpty == true },
                "the hub sent it, and the client acknowledged it")
            let messages = client.messages()
            #expect(await first(of: messages)?.messageId == "in-flight")
            await client.shutdown()
        }
    }

    /// A twin operation right after a connect, while the reconciler subscribes for listeners:
    /// the reconciler must not take the twin responses for unwanted (it decided what is wanted
    /// before its wait for the connection, and the twin operation subscribed meanwhile), or the
    /// hub drops the answer and the operation waits for its timeout.
    @Test func aTwinReadRightAfterConnectingIsAnswered() async throws {
        try await HubFixture.with { fixture in
            // The first twin operation of a client is the one at risk: twin responses are wanted
            // from then on.
            for round in 0..<20 {
                let client = try fixture.client { $0.operationTimeout = .seconds(5) }
                let patches = client.desiredPropertiesPatches()
                let messages = client.messages()
                async let connected: Void = client.connect()
                await #expect(throws: Never.self, "round \(round)") { _ = try await client.twin() }
                try await connected
                _ = (patches, messages)
                await client.shutdown()
            }
        }
    }
}
