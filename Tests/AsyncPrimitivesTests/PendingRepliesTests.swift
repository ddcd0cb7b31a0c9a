import NIOConcurrencyHelpers
import Testing

@testable import AsyncPrimitives

private enum Failure: Error, Equatable {
    case cancelled, timedOut
    case failed(String)
}

@Suite(.timeLimit(.minutes(2))) struct PendingRepliesTests {
    @Test func aReplyBeforeTheWaitIsKeptForAnExpectedKey() async throws {
        let replies = PendingReplies<String, Int, Failure>(keepingEarlyReplies: false)
        replies.expect("a")
        replies.complete("a", with: .success(1))
        #expect(try await replies.reply(to: "a") { .cancelled } == 1)
        #expect(replies.waitingCount == 0)
    }

    @Test func aReplyNobodyExpectedIsDroppedUnlessEarlyRepliesAreKept() throws {
        let dropping = PendingReplies<Int, Int, Failure>(keepingEarlyReplies: false)
        dropping.complete(7, with: .success(1))
        #expect(dropping.register(7, waiter: { _ in }) == nil)
        let keeping = PendingReplies<Int, Int, Failure>(keepingEarlyReplies: true)
        keeping.complete(7, with: .success(1))
        #expect(
            try keeping.register(7, waiter: { _ in Issue.record("called although the reply was returned") })?.get() == 1
        )
    }

    @Test func aWaitCancelledBeforeItRegistersEndsAtOnce() async {
        let replies = PendingReplies<Int, Int, Failure>(keepingEarlyReplies: true)
        let gate = OneWaySignal()
        let task = Task {
            // Cancelled while parked here, before reply(to:) is called.
            await gate.wait(timeout: .seconds(30))
            return await Result { () async throws(Failure) -> Int in try await replies.reply(to: 1) { .cancelled } }
        }
        task.cancel()
        gate.signal()
        #expect(await task.value == .failure(.cancelled))
        // Its late reply is swallowed by the tombstone, not kept for someone else.
        replies.complete(1, with: .success(99))
        #expect(replies.register(2, waiter: { _ in }) == nil)
        #expect(replies.waitingCount == 1)
    }

    @Test func aLateReplyToAnAbandonedKeyCannotCompleteTheNextRequestWithThatKey() async {
        let replies = PendingReplies<Int, Int, Failure>(keepingEarlyReplies: true)
        let calls = NIOLockedValueBox<[Result<Int, Failure>]>([])
        _ = replies.register(5, waiter: { result in calls.withLockedValue { $0.append(result) } })
        replies.abandon(5, with: .timedOut)
        replies.complete(5, with: .success(1))  // the abandoned request's late reply
        let next = replies.register(5, waiter: { result in calls.withLockedValue { $0.append(result) } })
        #expect(next == nil, "the late reply must not be kept for the key's next request")
        replies.complete(5, with: .success(2))
        #expect(calls.withLockedValue { $0 } == [.failure(.timedOut), .success(2)])
    }

    @Test func aWaitCancelledWhileWaitingFailsAndLeavesNothingBehind() async {
        let replies = PendingReplies<String, Int, Failure>(keepingEarlyReplies: false)
        replies.expect("x")
        let task = Task {
            await Result { () async throws(Failure) -> Int in try await replies.reply(to: "x") { .cancelled } }
        }
        while replies.waitingCount == 0 { await Task.yield() }
        task.cancel()
        #expect(await task.value == .failure(.cancelled))
        #expect(replies.waitingCount == 0)
    }

    /// Timeouts racing replies, many times: every wait ends exactly once, with the reply or the
    /// timeout, and no waiter stays behind.
    @Test func timeoutsRacingRepliesNeverHangOrLeak() async {
        let replies = PendingReplies<Int, Int, Failure>(keepingEarlyReplies: false)
        await withTaskGroup(of: Void.self) { group in
            for key in 0..<500 {
                group.addTask {
                    replies.expect(key)
                    let outcome = await Result { () async throws(Failure) -> Int in
                        try await withTimeout(.microseconds(Int64(key % 7) * 50), timeoutError: { .timedOut }) {
                            () async throws(Failure) -> Int in
                            try await replies.reply(to: key) { .cancelled }
                        }
                    }
                    switch outcome {
                    case .success(let value): #expect(value == key)
                    case .failure(let failure): #expect(failure == .timedOut)
                    }
                }
                group.addTask {
                    if key % 3 == 0 { await Task.yield() }
                    replies.complete(key, with: .success(key))
                }
            }
        }
        #expect(replies.waitingCount == 0)
    }

    @Test func manyWaitersEachGetTheirOwnReplyOnce() async {
        let replies = PendingReplies<Int, Int, Failure>(keepingEarlyReplies: true)
        let count = 5_000
        let calls = NIOLockedValueBox([Int: Int]())
        for key in 0..<count {
            if let early = replies.register(
                key,
                waiter: { result in
                    calls.withLockedValue { $0[key, default: 0] += (try? result.get()) == key ? 1 : 100 }
                })
            {
                Issue.record("no reply can be there yet: \(early)")
            }
        }
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<4 {
                group.addTask {
                    for key in stride(from: worker, to: count, by: 4) {
                        replies.complete(key, with: .success(key))
                        // A second reply and an abandon racing in: still called once.
                        replies.complete(key, with: .success(-1))
                        replies.abandon(key, with: .timedOut)
                    }
                }
            }
        }
        let seen = calls.withLockedValue { $0 }
        #expect(seen.count == count)
        #expect(seen.values.allSatisfy { $0 == 1 })
    }

    @Test func failAllAndFailOverdueFailTheRightWaiters() {
        let replies = PendingReplies<Int, Int, Failure>(keepingEarlyReplies: true)
        let results = NIOLockedValueBox([Int: Result<Int, Failure>]())
        let now = ContinuousClock.now
        for key in 0..<4 {
            _ = replies.register(key, deadline: key < 2 ? now - .seconds(1) : now + .seconds(60)) { result in
                results.withLockedValue { $0[key] = result }
            }
        }
        replies.failOverdue(now: now, with: .timedOut)
        #expect(results.withLockedValue { $0 } == [0: .failure(.timedOut), 1: .failure(.timedOut)])
        replies.failAll(with: .failed("gone"))
        #expect(results.withLockedValue { $0[2] } == .failure(.failed("gone")))
        #expect(results.withLockedValue { $0[3] } == .failure(.failed("gone")))
        #expect(replies.waitingCount == 0)
        // Late acknowledgements of failed requests are dropped, not kept.
        replies.complete(3, with: .success(3))
        #expect(replies.register(3, waiter: { _ in }) == nil)
    }
}

extension Result {
    /// The outcome of a typed-throwing async body.
    init(_ body: () async throws(Failure) -> Success) async {
        do {
            self = .success(try await body())
        } catch {
            self = .failure(error)
        }
    }
}
