import NIOConcurrencyHelpers
import Testing

@testable import AsyncPrimitives

@Suite(.timeLimit(.minutes(1))) struct SignalTests {
    @Test func aChangeBetweenTheLookAndTheWaitIsNotMissed() async {
        let signal = ChangeSignal()
        let generation = signal.generation
        signal.signal()
        #expect(await signal.wait(afterGeneration: generation, timeout: .seconds(30)))
    }

    @Test func aChangeSignalWaitEndsAtItsTimeoutWithoutAChange() async {
        let signal = ChangeSignal()
        #expect(await signal.wait(afterGeneration: signal.generation, timeout: .milliseconds(20)) == false)
    }

    @Test func everyWaiterWakesOnAChange() async {
        let signal = ChangeSignal()
        let generation = signal.generation
        let woken = NIOLockedValueBox(0)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<200 {
                group.addTask {
                    if await signal.wait(afterGeneration: generation, timeout: .seconds(30)) {
                        woken.withLockedValue { $0 += 1 }
                    }
                }
            }
            group.addTask {
                try? await Task.sleep(for: .milliseconds(50))
                signal.signal()
            }
        }
        #expect(woken.withLockedValue { $0 } == 200)
    }

    @Test func cancellingAWaiterEndsItsWait() async {
        let signal = ChangeSignal()
        let task = Task { await signal.wait(afterGeneration: signal.generation) }
        try? await Task.sleep(for: .milliseconds(10))
        task.cancel()
        await task.value
        let cancelledFirst = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            await signal.wait(afterGeneration: signal.generation)
        }
        await cancelledFirst.value
    }

    @Test func aOneWaySignalStaysGiven() async {
        let signal = OneWaySignal()
        #expect(await signal.wait(timeout: .milliseconds(10)) == false)
        let waiter = Task { await signal.wait(timeout: .seconds(30)) }
        signal.signal()
        #expect(await waiter.value)
        #expect(await signal.wait(timeout: .seconds(30)))
        #expect(signal.isSignalled)
    }

    @Test func withTimeoutGivesTheOperationsResultOrTheTimeout() async {
        enum Failure: Error, Equatable { case timedOut, cancelled }
        let fast = await Result { () async throws(Failure) -> Int in
            try await withTimeout(.seconds(30), timeoutError: { .timedOut }) { () async throws(Failure) -> Int in 1 }
        }
        #expect(fast == .success(1))
        let slow = await Result { () async throws(Failure) -> Int in
            try await withTimeout(.milliseconds(20), timeoutError: { .timedOut }) { () async throws(Failure) -> Int in
                do {
                    try await Task.sleep(for: .seconds(30))
                } catch {
                    throw .cancelled
                }
                return 2
            }
        }
        #expect(slow == .failure(.timedOut))
        let caller = Task {
            await Result { () async throws(Failure) -> Int in
                try await withTimeout(.seconds(30), timeoutError: { .timedOut }) { () async throws(Failure) -> Int in
                    do {
                        try await Task.sleep(for: .seconds(30))
                    } catch {
                        throw .cancelled
                    }
                    return 3
                }
            }
        }
        try? await Task.sleep(for: .milliseconds(10))
        caller.cancel()
        #expect(await caller.value == .failure(.cancelled))
    }

    @Test func aBroadcasterHandsEveryValueToEveryListenerUntilItFinishes() async {
        let broadcaster = Broadcaster<Int>()
        let first = broadcaster.stream()
        let second = broadcaster.stream()
        for value in 1...3 { broadcaster.yield(value) }
        broadcaster.finish()
        var collected: [[Int]] = []
        for stream in [first, second] {
            var values: [Int] = []
            for await value in stream { values.append(value) }
            collected.append(values)
        }
        #expect(collected == [[1, 2, 3], [1, 2, 3]])
        var late: [Int] = []
        for await value in broadcaster.stream() { late.append(value) }
        #expect(late.isEmpty)
    }
}
