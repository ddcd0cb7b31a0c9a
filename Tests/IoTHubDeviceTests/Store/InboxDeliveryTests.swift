import Foundation
import IoTHubProtocol
import Logging
import Testing

@testable import IoTHubDevice
@testable import LocalHub

/// The client and its durable inbox against a real LocalHub: a message is acknowledged to the
/// hub only once the inbox has it on disk.
@Suite(.serialized, .timeLimit(.minutes(3))) struct InboxDeliveryTests {
    private final class Scratch {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("inbox-client-\(UUID().uuidString)")
            .path
        deinit { try? FileManager.default.removeItem(atPath: path) }
    }

    private func openInbox(_ scratch: Scratch) throws -> CloudToDeviceInbox {
        var logger = Logger(label: "inbox-test")
        logger.logLevel = .critical
        return try CloudToDeviceInbox(configuration: InboxConfiguration(directory: scratch.path), logger: logger)
    }

    private let key = IdentityKey(deviceId: "dev1")

    private func subscribed(_ fixture: HubFixture) async -> Bool {
        await HubFixture.eventually {
            fixture.hub.identity(IdentityKey(deviceId: "dev1"))?.subscriptions[
                TopicFilter.cloudToDevice(deviceId: "dev1")] != nil
        }
    }

    @Test(arguments: Transport.allCases) func messagesAcknowledgedToTheHubAreInTheInboxAfterACrash(
        over transport: Transport
    ) async throws {
        try await HubFixture.with { fixture in
            let scratch = Scratch()
            let client = try fixture.client(over: transport)
            let inbox = try openInbox(scratch)
            client.deliverMessages(to: inbox)
            try await client.connect()
            #expect(await subscribed(fixture))
            for index in 0..<20 {
                _ = try fixture.hub.enqueueCloudToDevice(
                    to: "dev1", message: Message(payload: Data("c2d \(index)".utf8), messageId: "c\(index)"),
                    timeToLive: nil)
            }
            // The hub forgets a message once it is acknowledged.
            #expect(await HubFixture.eventually { fixture.hub.identity(key)?.cloudToDevice.isEmpty == true })
            let lease = try #require(await inbox.receive(timeout: .seconds(5)))
            #expect(lease.message.messageId == "c0")
            await client.shutdown()
            inbox.close()
            // Whatever the process did next, the disk has every acknowledged message.
            let reopened = try openInbox(scratch)
            var ids: [String?] = []
            while let lease = await reopened.receive(timeout: .milliseconds(100)) {
                ids.append(lease.message.messageId)
            }
            #expect(ids == (0..<20).map { "c\($0)" })
            reopened.close()
        }
    }

    @Test func aMessageThatCannotBeKeptIsNotAcknowledgedAndComesAgain() async throws {
        try await HubFixture.with { fixture in
            let broken = Scratch()
            let client = try fixture.client { $0.connectionRetryInterval = .milliseconds(200) }
            let inbox = try openInbox(broken)
            client.deliverMessages(to: inbox)
            try await client.connect()
            #expect(await subscribed(fixture))
            // A store that cannot write any more (its writer is stopped).
            inbox.close()
            let connectionsBefore = fixture.hub.state.withLockedValue { $0.lastConnectionId }
            _ = try fixture.hub.enqueueCloudToDevice(
                to: "dev1", message: Message(payload: Data("keep me".utf8), messageId: "k1"), timeToLive: nil)
            // The client ends the connection instead of acknowledging; the hub still holds it.
            #expect(
                await HubFixture.eventually {
                    fixture.hub.state.withLockedValue { $0.lastConnectionId } > connectionsBefore
                })
            #expect(fixture.hub.identity(key)?.cloudToDevice.count == 1)
            // With a store that works, the hub's next delivery is kept and acknowledged.
            let working = Scratch()
            let fresh = try openInbox(working)
            client.deliverMessages(to: fresh)
            let lease = await fresh.receive(timeout: .seconds(20))
            #expect(
                lease?.message.messageId == "k1",
                "connections: \(fixture.hub.state.withLockedValue { $0.lastConnectionId }), connected: \(client.isConnected), hub holds \(fixture.hub.identity(key)?.cloudToDevice.count ?? -1), status: \(client.status)"
            )
            #expect(await HubFixture.eventually { fixture.hub.identity(key)?.cloudToDevice.isEmpty == true })
            await client.shutdown()
            fresh.close()
        }
    }
}
