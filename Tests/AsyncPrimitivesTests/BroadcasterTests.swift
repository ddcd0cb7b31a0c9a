import NIOConcurrencyHelpers
import Testing

@testable import AsyncPrimitives

@Suite(.timeLimit(.minutes(1))) struct BroadcasterTests {
    @Test func everyListenerGetsEveryValue() async {
        let broadcaster = Broadcaster<Int>()
        let first = broadcaster.stream()
        let second = broadcaster.stream()
        broadcaster.yield(1)
        broadcaster.yield(2)
        broadcaster.finish()
        #expect(await collect(first) == [1, 2])
        #expect(await collect(second) == [1, 2])
    }

    @Test func withoutKeepingAValueNobodyHearsIsDropped() async {
        let broadcaster = Broadcaster<Int>()
        broadcaster.yield(1)
        let late = broadcaster.stream()
        broadcaster.yield(2)
        broadcaster.finish()
        #expect(await collect(late) == [2])
        #expect(broadcaster.undeliveredCount == 0)
    }

    /// What comes while nobody listens goes to the next listener, before anything later and in
    /// order (the device client keeps a message the hub sent before it saw the UNSUBSCRIBE).
    @Test func keptValuesGoToTheNextListenerFirstInOrder() async {
        let broadcaster = Broadcaster<Int>(keepingUndelivered: true)
        do {
            let gone = broadcaster.stream()
            broadcaster.yield(0)
            _ = gone
        }
        #expect(!broadcaster.hasListeners)
        broadcaster.yield(1)
        broadcaster.yield(2)
        #expect(broadcaster.undeliveredCount == 2)
        let next = broadcaster.stream()
        let other = broadcaster.stream()
        broadcaster.yield(3)
        broadcaster.finish()
        #expect(await collect(next) == [1, 2, 3])
        #expect(await collect(other) == [3], "kept values go to one listener only")
        #expect(broadcaster.undeliveredCount == 0)
    }

    @Test func theObserverHearsListenersComeAndGo() async {
        let broadcaster = Broadcaster<Int>()
        let changes = NIOLockedValueBox<[String]>([])
        broadcaster.observeListeners { change in
            changes.withLockedValue {
                switch change {
                case .added: $0.append("added")
                case .removed: $0.append("removed")
                }
            }
        }
        do {
            let stream = broadcaster.stream()
            #expect(broadcaster.hasListeners)
            _ = stream
        }
        #expect(!broadcaster.hasListeners, "a dropped stream is no listener")
        let cancelled = Task { [stream = broadcaster.stream()] in
            for await _ in stream {}
        }
        cancelled.cancel()
        await cancelled.value
        #expect(!broadcaster.hasListeners, "a cancelled stream is no listener")
        #expect(changes.withLockedValue { $0 } == ["added", "removed", "added", "removed"])
        // finish() ends every stream without reporting each as a change.
        let last = broadcaster.stream()
        broadcaster.finish()
        #expect(await collect(last) == [])
        #expect(changes.withLockedValue { $0 } == ["added", "removed", "added", "removed", "added"])
    }
}

/// Every value of a stream that has been finished.
private func collect(_ stream: AsyncStream<Int>) async -> [Int] {
    var values: [Int] = []
    for await value in stream { values.append(value) }
    return values
}
