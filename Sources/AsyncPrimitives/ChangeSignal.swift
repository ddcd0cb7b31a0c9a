import NIOConcurrencyHelpers

/// Wakes every waiter each time something changed: the building block of long-polls.
///
/// A waiter first reads ``generation``, then looks at the data, then calls
/// ``wait(afterGeneration:timeout:)``: a change between the look and the wait has moved the
/// generation on, so the wait returns at once and nothing is missed.
package final class ChangeSignal: Sendable {
    private struct State: HoldsWaiters {
        var generation: UInt64 = 0
        var waiters = WaiterList<Void>()
    }

    private let state = NIOLockedValueBox(State())

    package init() {}

    /// How many changes there have been.
    package var generation: UInt64 {
        state.withLockedValue { $0.generation }
    }

    /// Moves the generation on and wakes every waiter.
    package func signal() {
        let waiters = state.withLockedValue { state in
            state.generation &+= 1
            return state.waiters.removeAll()
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns true once the generation has moved past `generation`, false after `timeout` or
    /// when the task is cancelled, whichever comes first.
    @discardableResult
    package func wait(afterGeneration generation: UInt64, timeout: Duration) async -> Bool {
        await withDeadline(timeout) { await self.wait(afterGeneration: generation) }
        return self.generation != generation
    }

    /// Returns once the generation has moved past `generation` or the task is cancelled.
    package func wait(afterGeneration generation: UInt64) async {
        await waitOnList(state) { $0.generation != generation }
    }
}

/// A one-way signal, such as "shutting down": once given it stays given, and every waiter,
/// present or future, returns.
package final class OneWaySignal: Sendable {
    private struct State: HoldsWaiters {
        var signalled = false
        var waiters = WaiterList<Void>()
    }

    private let state = NIOLockedValueBox(State())

    package init() {}

    package var isSignalled: Bool {
        state.withLockedValue { $0.signalled }
    }

    /// Gives the signal (again: nothing changes).
    package func signal() {
        let waiters = state.withLockedValue { state in
            state.signalled = true
            return state.waiters.removeAll()
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once the signal is given or the task is cancelled.
    package func wait() async {
        await waitOnList(state) { $0.signalled }
    }

    /// Returns true once the signal is given, false after `timeout` or on cancellation.
    @discardableResult
    package func wait(timeout: Duration) async -> Bool {
        await withDeadline(timeout) { await self.wait() }
        return isSignalled
    }
}

/// Continuations waiting for the same thing, by id.
struct WaiterList<Value: Sendable>: Sendable {
    private var nextId: UInt64 = 0
    private var waiters: [UInt64: CheckedContinuation<Value, Never>] = [:]

    mutating func makeId() -> UInt64 {
        nextId &+= 1
        return nextId
    }

    mutating func add(_ continuation: CheckedContinuation<Value, Never>, id: UInt64) {
        waiters[id] = continuation
    }

    mutating func remove(_ id: UInt64) -> CheckedContinuation<Value, Never>? {
        waiters.removeValue(forKey: id)
    }

    mutating func removeAll() -> [CheckedContinuation<Value, Never>] {
        defer { waiters.removeAll() }
        return Array(waiters.values)
    }

    var isEmpty: Bool { waiters.isEmpty }
}

/// A lock-protected state with waiters.
protocol HoldsWaiters: Sendable {
    var waiters: WaiterList<Void> { get set }
}

/// Waits on the waiters of the state behind `box` unless `done` already holds; cancellation
/// before or after registering ends the wait. The check and the registration happen under the
/// box's lock, so a signal cannot slip in between them.
private func waitOnList<State: HoldsWaiters>(
    _ box: NIOLockedValueBox<State>, unless done: @escaping @Sendable (State) -> Bool
) async {
    let id = box.withLockedValue { $0.waiters.makeId() }
    await withTaskCancellationHandler {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = box.withLockedValue { state -> Bool in
                // Cancellation sets the flag before its handler runs: either the handler finds
                // the continuation registered, or the flag is seen here.
                if done(state) || Task.isCancelled { return true }
                state.waiters.add(continuation, id: id)
                return false
            }
            if now { continuation.resume() }
        }
    } onCancel: {
        box.withLockedValue { $0.waiters.remove(id) }?.resume()
    }
}

/// Runs `operation` until it returns or `timeout` passes, whichever is first (the operation is
/// cancelled then).
func withDeadline(_ timeout: Duration, _ operation: @escaping @Sendable () async -> Void) async {
    await withTaskGroup(of: Void.self) { group in
        group.addTask { await operation() }
        group.addTask { try? await Task.sleep(for: timeout) }
        await group.next()
        group.cancelAll()
    }
}
