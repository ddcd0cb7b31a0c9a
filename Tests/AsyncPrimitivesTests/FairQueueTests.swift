import Testing

@testable import AsyncPrimitives

@Suite(.timeLimit(.minutes(1))) struct FairQueueTests {
    @Test func theLongestWaitingConsumerGetsTheNextItem() async throws {
        let queue = FairQueue<Int>()
        let first = Task { await queue.pop(timeout: .seconds(10)) }
        try await Task.sleep(for: .milliseconds(50))
        let second = Task { await queue.pop(timeout: .seconds(10)) }
        try await Task.sleep(for: .milliseconds(50))
        queue.push(1)
        queue.push(2)
        #expect(await first.value == 1)
        #expect(await second.value == 2)
    }

    @Test func tinyTimeoutsNeverHang() async {
        // A timer that fires before its waiter is registered must still end the wait.
        let queue = FairQueue<Int>()
        for _ in 0..<2_000 {
            #expect(await queue.pop(timeout: .nanoseconds(1)) == nil)
        }
        #expect(await queue.pop(timeout: .zero) == nil)
        queue.push(7)
        #expect(await queue.pop(timeout: .zero) == 7)
    }
}
