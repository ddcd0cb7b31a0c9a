import Foundation
import IoTHubProtocol
import Testing

@testable import Sidecar

@Suite(.timeLimit(.minutes(1))) struct MethodRequestQueueTests {
    static func request(_ id: String, _ name: String = "reboot") -> MethodRequest {
        MethodRequest(requestId: id, name: name, payload: Data("null".utf8))
    }

    @Test func requestsGoToPollersByNameAndInOrder() async throws {
        let queue = MethodRequestQueue()
        queue.deliver(Self.request("1", "reboot"))
        queue.deliver(Self.request("2", "ping"))
        #expect(await queue.next(name: "ping", timeout: .zero)?.requestId == "2")
        #expect(await queue.next(timeout: .zero)?.requestId == "1")
        #expect(await queue.next(timeout: .milliseconds(50)) == nil)
    }

    @Test func answersAreCheckedOnceAndWithinTheWindow() async throws {
        let queue = MethodRequestQueue()
        let arrived = Date()
        queue.deliver(Self.request("1"), now: arrived)
        _ = await queue.next(timeout: .zero)
        try queue.claimAnswer(for: "1", now: arrived.addingTimeInterval(10))
        #expect(throws: MethodRequestQueue.ResponseError.unknownRequest) { try queue.claimAnswer(for: "1") }
        queue.releaseClaim(for: "1")
        try queue.claimAnswer(for: "1", now: arrived.addingTimeInterval(20))
        #expect(throws: MethodRequestQueue.ResponseError.unknownRequest) { try queue.claimAnswer(for: "never") }
        queue.deliver(Self.request("2"), now: arrived)
        #expect(throws: MethodRequestQueue.ResponseError.expired) {
            try queue.claimAnswer(for: "2", now: arrived.addingTimeInterval(MethodRequestQueue.answerWindow + 1))
        }
    }

    @Test func aRequestWhosePollerWentAwayIsHandedOutAgainFirst() async throws {
        let queue = MethodRequestQueue()
        queue.deliver(Self.request("1"))
        queue.deliver(Self.request("2"))
        let lost = try #require(await queue.next(timeout: .zero))
        queue.requeue(lost)
        #expect(await queue.next(timeout: .zero)?.requestId == "1")
        #expect(queue.pending == 1)
    }

    @Test func answeringAWaitingRequestRemovesItFromTheQueue() async throws {
        let queue = MethodRequestQueue()
        queue.deliver(Self.request("1"))
        try queue.claimAnswer(for: "1")
        #expect(queue.pending == 0)
    }
}
