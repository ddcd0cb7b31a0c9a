import Foundation
import IoTHubDevice
import IoTHubProtocol
import Testing

@testable import LocalHub

@Suite(.serialized, .timeLimit(.minutes(3))) struct IoTHubDeviceClientTests {
    @Test(arguments: Transport.allCases) func connectsSendsAndDisconnects(over transport: Transport) async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: transport)
            try await client.connect()
            #expect(client.isConnected)
            #expect(fixture.hub.isConnected(IdentityKey(deviceId: "dev1")))
            #expect(fixture.transport() == transport, "the hub saw the connection arrive over \(transport)")
            try await client.send(
                Message(
                    payload: Data("hello".utf8), messageId: "m1", contentType: "text/plain", properties: ["k": "v w"]))
            let record = try #require(fixture.telemetry.first)
            #expect(record.message.messageId == "m1")
            #expect(record.message.properties == ["k": "v w"])
            #expect(String(decoding: record.message.payload, as: UTF8.self) == "hello")
            await client.disconnect()
            #expect(!client.isConnected)
            #expect(await HubFixture.eventually { !fixture.hub.isConnected(IdentityKey(deviceId: "dev1")) })
            await client.shutdown()
        }
    }

    @Test(arguments: Transport.allCases) func pipelinesManySendsConcurrently(over transport: Transport) async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: transport)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<500 {
                    group.addTask {
                        try await client.send(Message(payload: Data("\(index)".utf8), messageId: "m\(index)"))
                    }
                }
                try await group.waitForAll()
            }
            #expect(Set(fixture.telemetry.compactMap(\.message.messageId)) == Set((0..<500).map { "m\($0)" }))
            await client.shutdown()
        }
    }

    @Test(arguments: Transport.allCases) func aBatchArrivesInOrderAndEachMessageHasItsOwnResult(
        over transport: Transport
    ) async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: transport)
            var messages = (0..<300).map { Message(payload: Data("\($0)".utf8), messageId: "b\($0)") }
            messages[150] = Message(payload: Data(count: Message.maximumSize + 1), messageId: "too-large")
            let results = await client.send(messages)
            #expect(results.count == 300)
            for (index, result) in results.enumerated() {
                switch result {
                case .success: #expect(index != 150)
                case .failure(let error): #expect(index == 150 && error.code == "ValueError", "\(index): \(error)")
                }
            }
            let expected = (0..<300).filter { $0 != 150 }.map { "b\($0)" }
            #expect(fixture.telemetry.compactMap(\.message.messageId) == expected)
            await client.shutdown()
        }
    }

    /// The Python SDK's `Message.set_as_security_message()`: the hub sees `$.ifid`.
    @Test func aSecurityMessageReachesTheHubWithTheSecurityAgentInterfaceId() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client()
            var security = Message(payload: Data("security event".utf8))
            security.setAsSecurityMessage()
            try await client.send(security)
            try await client.send(Message(payload: Data("plain".utf8)))
            await client.shutdown()
            let records = fixture.telemetry
            #expect(
                records.first { $0.message.payload == Data("security event".utf8) }?.message.interfaceId
                    == "urn:azureiot:Security:SecurityAgent:1")
            #expect(
                records.first { $0.message.payload == Data("security event".utf8) }?.message.isSecurityMessage == true)
            #expect(records.contains { $0.message.payload == Data("plain".utf8) && $0.message.interfaceId == nil })
        }
    }

    @Test(arguments: Transport.allCases) func twinGetAndReportedPatch(over transport: Transport) async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: transport)
            _ = try fixture.hub.patchDesired(
                IdentityKey(deviceId: "dev1"), patch: ["fan": 1], tags: nil, replace: false, ifMatch: nil)
            let twin = try await client.twin()
            #expect(twin.desired.properties == ["fan": 1])
            #expect(twin.desired.version == 2)
            let version = try await client.updateReportedProperties(["temperature": 21.5, "ok": true])
            #expect(version == 2)
            #expect(
                fixture.hub.identity(IdentityKey(deviceId: "dev1"))?.reported.properties == [
                    "temperature": 21.5, "ok": true,
                ])
            await client.shutdown()
        }
    }

    @Test(arguments: Transport.allCases) func desiredPatchesArrive(over transport: Transport) async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: transport)
            let patches = client.desiredPropertiesPatches()
            #expect(
                await HubFixture.eventually {
                    fixture.hub.identity(IdentityKey(deviceId: "dev1"))?.subscriptions[
                        TopicFilter.desiredPropertiesPatches] != nil
                })
            _ = try fixture.hub.patchDesired(
                IdentityKey(deviceId: "dev1"), patch: ["mode": "eco"], tags: nil, replace: false, ifMatch: nil)
            let patch = await first(of: patches)
            #expect(patch == ["mode": "eco", "$version": 2])
            await client.shutdown()
        }
    }

    @Test(arguments: Transport.allCases) func methodsAreAnswered(over transport: Transport) async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: transport)
            let requests = client.methodRequests()
            #expect(
                await HubFixture.eventually {
                    fixture.hub.identity(IdentityKey(deviceId: "dev1"))?.subscriptions[TopicFilter.methodRequests]
                        != nil
                })
            let responder = Task { () throws -> String? in
                for await request in requests {
                    try await client.respond(
                        MethodResponse(
                            answering: request, status: 201,
                            payload: Data(#"{"echo":\#(String(decoding: request.payload, as: UTF8.self))}"#.utf8)))
                    return request.name
                }
                return nil
            }
            let result = try await fixture.hub.invokeMethod(
                on: IdentityKey(deviceId: "dev1"), name: "reboot", payload: Data(#"{"delay":5}"#.utf8),
                responseTimeout: .seconds(10))
            #expect(result.status == 201)
            #expect(try JSONValue(parsing: result.payload) == ["echo": ["delay": 5]])
            #expect(try await responder.value == "reboot")
            await client.shutdown()
        }
    }

    @Test(arguments: Transport.allCases) func cloudToDeviceMessagesArrive(over transport: Transport) async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: transport)
            let messages = client.messages()
            #expect(
                await HubFixture.eventually {
                    fixture.hub.identity(IdentityKey(deviceId: "dev1"))?.subscriptions[
                        TopicFilter.cloudToDevice(deviceId: "dev1")] != nil
                })
            _ = try fixture.hub.enqueueCloudToDevice(
                to: "dev1", message: Message(payload: Data("c2d".utf8), messageId: "c1", properties: ["p": "1"]),
                timeToLive: nil)
            let message = try #require(await first(of: messages))
            #expect(message.messageId == "c1")
            #expect(message.properties == ["p": "1"])
            #expect(message.to == "/devices/dev1/messages/deviceBound")
            #expect(
                await HubFixture.eventually {
                    fixture.hub.identity(IdentityKey(deviceId: "dev1"))?.cloudToDevice.isEmpty == true
                })
            await client.shutdown()
        }
    }

    /// Messages the hub sends in quick succession reach the device in fewer reads than packets
    /// (several TLS records per read). Each must be handed out, not left in the TLS layer's
    /// buffer until the next bytes arrive (the keep-alive, a minute later).
    @Test(arguments: Transport.allCases) func cloudToDeviceMessagesSentInQuickSuccessionAllArrive(
        over transport: Transport
    ) async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: transport) { $0.keepAlive = 60 }
            let messages = client.messages()
            #expect(
                await HubFixture.eventually {
                    fixture.hub.identity(IdentityKey(deviceId: "dev1"))?.subscriptions[
                        TopicFilter.cloudToDevice(deviceId: "dev1")] != nil
                })
            let ids = (0..<40).map { "burst-\($0)" }
            for id in ids {
                _ = try fixture.hub.enqueueCloudToDevice(
                    to: "dev1", message: Message(payload: Data(id.utf8), messageId: id), timeToLive: nil)
            }
            let received = await firstElements(ids.count, of: messages)
            #expect(received.map(\.messageId) == ids)
            await client.shutdown()
        }
    }

    /// A message larger than one TLS record (16 KiB) reaches the device in pieces.
    @Test(arguments: Transport.allCases) func aCloudToDeviceMessageOfSeveralTLSRecordsArrivesWhole(
        over transport: Transport
    ) async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: transport)
            let messages = client.messages()
            #expect(
                await HubFixture.eventually {
                    fixture.hub.identity(IdentityKey(deviceId: "dev1"))?.subscriptions[
                        TopicFilter.cloudToDevice(deviceId: "dev1")] != nil
                })
            let payload = Data((0..<60_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 8) })
            _ = try fixture.hub.enqueueCloudToDevice(
                to: "dev1", message: Message(payload: payload, messageId: "large"), timeToLive: nil)
            let message = try #require(await first(of: messages))
            #expect(message.payload == payload)
            await client.shutdown()
        }
    }

    @Test(arguments: Transport.allCases) func wrongKeyGivesCredentialErrorAndNoRetry(over transport: Transport)
        async throws
    {
        try await HubFixture.with { fixture in
            let client = try IoTHubDeviceClient.fromSymmetricKey(
                Data(repeating: 1, count: 32).base64EncodedString(), hostName: "localhost", deviceId: "dev1",
                configuration: fixture.configuration(over: transport))
            await #expect(throws: IoTHubError.self) { try await client.connect() }
            do {
                try await client.connect()
            } catch {
                #expect((error as? IoTHubError)?.code == "CredentialError", "\(error)")
            }
            #expect(!client.isConnected)
            await client.shutdown()
        }
    }

    @Test(arguments: Transport.allCases) func autoConnectOffGivesNoConnectionError(over transport: Transport)
        async throws
    {
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: transport) { $0.autoConnect = false }
            do {
                try await client.send(Message(payload: Data("x".utf8)))
                Issue.record("sent without a connection")
            } catch {
                #expect((error as? IoTHubError)?.code == "NoConnectionError", "\(error)")
            }
            await client.shutdown()
            do {
                try await client.connect()
                Issue.record("connected after shutdown")
            } catch {
                #expect((error as? IoTHubError)?.code == "ClientError", "\(error)")
            }
        }
    }

    @Test(arguments: Transport.allCases) func aDroppedConnectionReconnectsAndLosesNoMessage(over transport: Transport)
        async throws
    {
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: transport)
            try await client.connect()
            let total = 1000
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<total {
                    group.addTask {
                        try await client.send(Message(payload: Data("\(index)".utf8), messageId: "m\(index)"))
                    }
                    if index == total / 3 {
                        group.addTask { _ = fixture.hub.dropConnection(of: IdentityKey(deviceId: "dev1")) }
                    }
                }
                try await group.waitForAll()
            }
            let ids = fixture.telemetry.compactMap(\.message.messageId)
            #expect(Set(ids) == Set((0..<total).map { "m\($0)" }), "every completed send reached the hub")
            expectCopiesAfterTheFirstAreRedeliveries(fixture.telemetry)
            #expect(
                fixture.hub.state.withLockedValue { $0.lastConnectionId } >= 2,
                "the connection was dropped and made again")
            #expect(fixture.transport() == transport)
            #expect(client.isConnected)
            await client.shutdown()
        }
    }

    /// Sends made while the client is noticing a drop and reconnecting: libmosquitto keeps a
    /// message it could not write and sends it after the reconnect, so the client must not send
    /// it a second time itself.
    @Test(arguments: Transport.allCases) func sendsRightAfterADropAreNotSentTwice(over transport: Transport)
        async throws
    {
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: transport)
            try await client.connect()
            // The first send comes at different points of noticing the drop and reconnecting.
            let pauses = [0, 1, 3, 10]
            let rounds = pauses.count
            for (round, pause) in pauses.enumerated() {
                _ = fixture.hub.dropConnection(of: IdentityKey(deviceId: "dev1"))
                try await Task.sleep(for: .milliseconds(pause))
                for index in 0..<3 {
                    try await client.send(Message(payload: Data("after drop".utf8), messageId: "r\(round)-\(index)"))
                }
                // Stay connected longer than 1 s, so the next drop is not taken for a takeover by
                // another client (which the client answers by waiting before it reconnects).
                try await Task.sleep(for: .milliseconds(1100))
            }
            let ids = fixture.telemetry.compactMap(\.message.messageId)
            #expect(Set(ids) == Set((0..<rounds).flatMap { round in (0..<3).map { "r\(round)-\($0)" } }))
            expectCopiesAfterTheFirstAreRedeliveries(fixture.telemetry)
            await client.shutdown()
        }
    }
}

extension IoTHubDeviceClientTests {
    /// A send never waits without bound: without a PUBACK within the operation timeout it fails
    /// with OperationTimeout, single or in a batch, and the client goes on working.
    @Test func aSendWithoutAcknowledgementFailsAfterTheOperationTimeout() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client { $0.operationTimeout = .seconds(1) }
            try await client.connect()
            fixture.hub.setFaults(Faults(acknowledgementDelayMilliseconds: 4000))
            do {
                try await client.send(Message(payload: Data("slow".utf8), messageId: "slow"))
                Issue.record("a send without PUBACK succeeded")
            } catch {
                #expect((error as? IoTHubError)?.code == "OperationTimeout", "\(error)")
            }
            let outcomes = await client.send([
                Message(payload: Data("a".utf8), messageId: "a"), Message(payload: Data("b".utf8), messageId: "b"),
            ])
            #expect(outcomes.map { $0.failureCode ?? "ok" } == ["OperationTimeout", "OperationTimeout"])
            // Only the acknowledgement was late: the hub has the messages.
            #expect(Set(fixture.telemetry.compactMap(\.message.messageId)) == ["slow", "a", "b"])
            fixture.hub.setFaults(Faults())
            try await client.send(Message(payload: Data("on time".utf8), messageId: "on-time"))
            #expect(client.isConnected)
            await client.shutdown()
        }
    }
}

extension Result where Failure == IoTHubError {
    fileprivate var failureCode: String? {
        if case .failure(let error) = self { error.code } else { nil }
    }
}

/// MQTT's at-least-once rule seen from the hub: a client sends a message once without the DUP
/// flag; every later copy of it is a redelivery. A copy without DUP after another copy means the
/// client sent the message anew (a duplicate it made itself).
private func expectCopiesAfterTheFirstAreRedeliveries(
    _ records: [TelemetryRecord], sourceLocation: SourceLocation = #_sourceLocation
) {
    var seen: Set<String> = []
    for record in records {
        guard let id = record.message.messageId else { continue }
        if !seen.insert(id).inserted {
            #expect(
                record.redelivered, "\(id) reached the hub again without DUP: the client sent it twice",
                sourceLocation: sourceLocation)
        }
    }
}

@Suite(.serialized, .timeLimit(.minutes(3))) struct ModuleClientTests {
    @Test func modulesSendToOutputsReceiveInputsAndHaveTwins() async throws {
        try await HubFixture.with { fixture in
            let module = try fixture.client("dev1", moduleId: "filter")
            try await module.send(Message(payload: Data("out".utf8), messageId: "o1"), toOutput: "alerts")
            let record = try #require(fixture.telemetry.first)
            #expect(record.moduleId == "filter")
            #expect(record.message.outputName == "alerts")

            let inputs = module.messages()
            let key = IdentityKey(deviceId: "dev1", moduleId: "filter")
            #expect(
                await HubFixture.eventually {
                    fixture.hub.identity(key)?.subscriptions[
                        TopicFilter.moduleInputs(deviceId: "dev1", moduleId: "filter")] != nil
                })
            _ = try fixture.hub.sendToModuleInput(
                key, input: "in 1", message: Message(payload: Data("in".utf8), messageId: "i1"))
            let input = await first(of: inputs)
            #expect(input?.inputName == "in 1")
            #expect(input?.messageId == "i1")

            _ = try fixture.hub.patchDesired(key, patch: ["threshold": 5], tags: nil, replace: false, ifMatch: nil)
            #expect(try await module.twin().desired.properties == ["threshold": 5])
            #expect(try await module.updateReportedProperties(["seen": 1]) == 2)
            #expect(
                fixture.hub.identity(IdentityKey(deviceId: "dev1"))?.reported.properties == [:],
                "the device's own twin is untouched")

            let device = try fixture.client()
            do {
                try await device.send(Message(), toOutput: "x")
                Issue.record("a device sent to an output")
            } catch {
                #expect((error as? IoTHubError)?.code == "ClientError")
            }
            await module.shutdown()
            await device.shutdown()
        }
    }
}
