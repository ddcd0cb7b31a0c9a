import Foundation
import IoTHubProtocol
@testable import Sidecar
import Testing

@Suite(.timeLimit(.minutes(1))) struct InboxTests {
    static func message(_ id: String) -> Message { Message(payload: Data(id.utf8), messageId: id) }

    @Test func messagesAreLeasedInOrderAndCompleted() async throws {
        let inbox = Inbox()
        inbox.deliver(Self.message("a"))
        inbox.deliver(Self.message("b"))
        let first = try #require(await inbox.receive(timeout: .zero))
        #expect(first.message.messageId == "a")
        #expect(first.deliveryCount == 1)
        let second = try #require(await inbox.receive(timeout: .zero))
        #expect(second.message.messageId == "b")
        #expect(await inbox.receive(timeout: .milliseconds(50)) == nil, "locked messages are not handed out again")
        try inbox.complete(first.lockToken)
        #expect(throws: Inbox.LeaseError.unknownLockToken) { try inbox.complete(first.lockToken) }
        #expect(inbox.depth.locked == 1)
    }

    @Test func abandonedAndExpiredLocksRedeliverWithACount() async throws {
        let inbox = Inbox(lockDuration: .milliseconds(200))
        inbox.deliver(Self.message("a"))
        let first = try #require(await inbox.receive(timeout: .zero))
        try inbox.abandon(first.lockToken)
        let again = try #require(await inbox.receive(timeout: .zero))
        #expect(again.message.messageId == "a")
        #expect(again.deliveryCount == 2)
        #expect(again.lockToken != first.lockToken)
        #expect(throws: Inbox.LeaseError.unknownLockToken) { try inbox.complete(first.lockToken) }
        // A poller that never answers: the lock expires and the message comes back.
        let expired = try #require(await inbox.receive(timeout: .seconds(2)))
        #expect(expired.deliveryCount == 3)
    }

    @Test func aWaitingPollerGetsTheNextMessageAndTimeoutsReturnNil() async throws {
        let inbox = Inbox()
        async let waiting = inbox.receive(timeout: .seconds(5))
        try await Task.sleep(for: .milliseconds(50))
        inbox.deliver(Self.message("late"))
        #expect(await waiting?.message.messageId == "late")
        let start = ContinuousClock.now
        #expect(await inbox.receive(timeout: .milliseconds(100)) == nil)
        #expect(ContinuousClock.now - start >= .milliseconds(100))
    }

    @Test func pollersAreServedInArrivalOrder() async throws {
        let inbox = Inbox()
        let first = Task { await inbox.receive(timeout: .seconds(5))?.message.messageId }
        try await Task.sleep(for: .milliseconds(50))
        let second = Task { await inbox.receive(timeout: .seconds(5))?.message.messageId }
        try await Task.sleep(for: .milliseconds(50))
        inbox.deliver(Self.message("1"))
        inbox.deliver(Self.message("2"))
        #expect(await first.value == "1")
        #expect(await second.value == "2")
    }

    @Test func aCancelledPollerTakesNothing() async throws {
        let inbox = Inbox()
        let poller = Task { await inbox.receive(timeout: .seconds(5)) }
        try await Task.sleep(for: .milliseconds(50))
        poller.cancel()
        #expect(await poller.value == nil)
        inbox.deliver(Self.message("kept"))
        #expect(await inbox.receive(timeout: .zero)?.message.messageId == "kept")
    }

    @Test func capacityDropsTheOldestWaitingMessage() async throws {
        let inbox = Inbox(capacity: 2)
        for id in ["a", "b", "c"] { inbox.deliver(Self.message(id)) }
        #expect(inbox.depth.dropped == 1)
        #expect(await inbox.receive(timeout: .zero)?.message.messageId == "b")
        #expect(await inbox.receive(timeout: .zero)?.message.messageId == "c")
    }
}

extension Inbox.Lease: Equatable {
    static func == (lhs: Inbox.Lease, rhs: Inbox.Lease) -> Bool { lhs.lockToken == rhs.lockToken }
}
