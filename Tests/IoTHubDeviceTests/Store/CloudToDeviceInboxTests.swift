import Foundation
import IoTHubProtocol
import Logging
import Testing

@testable import IoTHubDevice

/// The durable inbox on its own (the client's network thread is played by stage/commit).
@Suite(.timeLimit(.minutes(2))) struct CloudToDeviceInboxTests {
    private final class Scratch {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("inbox-\(UUID().uuidString)").path
        deinit { try? FileManager.default.removeItem(atPath: path) }
    }

    private func open(_ scratch: Scratch, _ adjust: (inout InboxConfiguration) -> Void = { _ in }) throws
        -> CloudToDeviceInbox
    {
        var configuration = InboxConfiguration(directory: scratch.path)
        adjust(&configuration)
        var logger = Logger(label: "inbox-test")
        logger.logLevel = .critical
        return try CloudToDeviceInbox(configuration: configuration, logger: logger)
    }

    private func deliver(_ inbox: CloudToDeviceInbox, _ ids: [String]) {
        for id in ids { inbox.stage(Message(payload: Data(id.utf8), messageId: id, properties: ["k": id])) }
        #expect(inbox.commitStaged())
    }

    @Test func messagesComeOutInOrderUnderLocksWithDeliveryCounts() async throws {
        let scratch = Scratch()
        let inbox = try open(scratch)
        deliver(inbox, ["a", "b", "c"])
        let first = try #require(await inbox.receive(timeout: .seconds(1)))
        #expect(first.message.messageId == "a" && first.deliveryCount == 1 && first.message.properties == ["k": "a"])
        try await inbox.abandon(first.lockToken)
        let again = try #require(await inbox.receive(timeout: .seconds(1)))
        #expect(again.message.messageId == "a" && again.deliveryCount == 2)
        try await inbox.complete(again.lockToken)
        await #expect(throws: CloudToDeviceInbox.LeaseError.unknownLockToken) {
            try await inbox.complete(again.lockToken)
        }
        let second = try #require(await inbox.receive(timeout: .seconds(1)))
        #expect(second.message.messageId == "b")
        try await inbox.giveBack(second.lockToken)
        #expect(
            try #require(await inbox.receive(timeout: .seconds(1))).deliveryCount == 1,
            "a message given back was not delivered")
        #expect(inbox.depth == .init(waiting: 1, locked: 1, dropped: 0, bytes: inbox.depth.bytes))
        inbox.close()
    }

    @Test func lockedCountedAndCompletedSurviveReopening() async throws {
        let scratch = Scratch()
        do {
            let inbox = try open(scratch)
            deliver(inbox, ["done", "leased", "untouched"])
            let done = try #require(await inbox.receive(timeout: .seconds(1)))
            try await inbox.complete(done.lockToken)
            let leased = try #require(await inbox.receive(timeout: .seconds(1)))
            #expect(leased.deliveryCount == 1)
            // Gone without a word, as in a crash: the lease was on disk before it was returned.
            inbox.close()
        }
        let inbox = try open(scratch)
        #expect(inbox.depth.waiting == 2)
        let first = try #require(await inbox.receive(timeout: .seconds(1)))
        let second = try #require(await inbox.receive(timeout: .seconds(1)))
        #expect([first.message.messageId, second.message.messageId] == ["leased", "untouched"])
        #expect(first.deliveryCount == 2, "one higher than before the crash")
        #expect(second.deliveryCount == 1)
        #expect(await inbox.receive(timeout: .milliseconds(50)) == nil, "the completed message never comes back")
        inbox.close()
    }

    @Test func anExpiredLockMakesTheMessageDeliverableAgain() async throws {
        let scratch = Scratch()
        let inbox = try open(scratch) { $0.lockDuration = .milliseconds(100) }
        deliver(inbox, ["x"])
        let first = try #require(await inbox.receive(timeout: .seconds(1)))
        let again = try #require(await inbox.receive(timeout: .seconds(5)))
        #expect(again.message.messageId == "x" && again.deliveryCount == 2)
        await #expect(throws: CloudToDeviceInbox.LeaseError.unknownLockToken) {
            try await inbox.complete(first.lockToken)
        }
        inbox.close()
    }

    @Test func overItsBoundsTheOldestWaitingMessagesAreDropped() async throws {
        let scratch = Scratch()
        let inbox = try open(scratch) { $0.maximumMessages = 5 }
        deliver(inbox, ["0"])
        let locked = try #require(await inbox.receive(timeout: .seconds(1)))
        deliver(inbox, (1...7).map(String.init))
        #expect(inbox.depth.dropped == 3)
        var ids: [String?] = []
        while let lease = await inbox.receive(timeout: .milliseconds(50)) { ids.append(lease.message.messageId) }
        #expect(ids == ["4", "5", "6", "7"], "the locked one stays; the oldest waiting ones went")
        try await inbox.complete(locked.lockToken)
        inbox.close()
        let bytes = try open(Scratch()) { $0.maximumBytes = 1000 }
        for index in 0..<10 {
            bytes.stage(Message(payload: Data(count: 300), messageId: "\(index)"))
        }
        #expect(bytes.commitStaged())
        #expect(bytes.depth.bytes <= 1000 && bytes.depth.dropped > 0)
        bytes.close()
    }

    @Test func aLongLifeOfMessagesKeepsTheDiskSmall() async throws {
        let scratch = Scratch()
        let inbox = try open(scratch)
        for round in 0..<300 {
            for index in 0..<10 { inbox.stage(Message(payload: Data(count: 4000), messageId: "\(round)-\(index)")) }
            #expect(inbox.commitStaged())
            for _ in 0..<10 {
                let lease = try #require(await inbox.receive(timeout: .seconds(1)))
                try await inbox.complete(lease.lockToken)
            }
        }
        deliver(inbox, ["last"])
        inbox.close()
        let reopened = try open(scratch)
        #expect(reopened.depth.waiting == 1)
        #expect(try #require(await reopened.receive(timeout: .seconds(1))).message.messageId == "last")
        let size = try FileManager.default.contentsOfDirectory(atPath: scratch.path).filter { $0.hasSuffix(".log") }
            .reduce(0) {
                $0 + ((try? FileManager.default.attributesOfItem(atPath: scratch.path + "/" + $1)[.size] as? Int) ?? 0)
            }
        #expect(size < 20 << 20, "12 MB went through; \(size) bytes are left")
        reopened.close()
    }

    @Test func anInboxHoldingOneDevicesMessagesRefusesAnother() async throws {
        let scratch = Scratch()
        let key = Data(repeating: 7, count: 32).base64EncodedString()
        let first = try IoTHubDeviceClient.fromSymmetricKey(key, hostName: "hub.example", deviceId: "one")
        let second = try IoTHubDeviceClient.fromSymmetricKey(key, hostName: "hub.example", deviceId: "two")
        do {
            let inbox = try CloudToDeviceInbox(configuration: InboxConfiguration(directory: scratch.path), owner: first)
            deliver(inbox, ["for one"])
            inbox.close()
        }
        #expect(throws: CloudToDeviceInbox.LeaseError.self) {
            _ = try CloudToDeviceInbox(configuration: InboxConfiguration(directory: scratch.path), owner: second)
        }
        let again = try CloudToDeviceInbox(configuration: InboxConfiguration(directory: scratch.path), owner: first)
        #expect(again.depth.waiting == 1)
        again.close()
        await first.shutdown()
        await second.shutdown()
    }
}
