import NIOConcurrencyHelpers

/// Wakes every waiter when something changed: the building block of the hub's long-polls.
///
/// A waiter first reads ``generation``, then looks at the data, then calls
/// ``wait(afterGeneration:timeout:)``: a change between the look and the wait bumps the
/// generation, so the wait returns at once and nothing is missed.
final class ChangeSignal: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var nextWaiterId: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    }

    private let state = NIOLockedValueBox(State())

    var generation: UInt64 {
        state.withLockedValue { $0.generation }
    }

    /// Bumps the generation and wakes every waiter.
    func signal() {
        let waiters = state.withLockedValue { state in
            state.generation &+= 1
            let waiters = state.waiters
            state.waiters.removeAll()
            return waiters
        }
        for waiter in waiters.values { waiter.resume() }
    }

    /// Returns when the generation moves past `generation`, after `timeout`, or when the task is
    /// cancelled, whichever comes first.
    func wait(afterGeneration generation: UInt64, timeout: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForSignal(afterGeneration: generation) }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    private func waitForSignal(afterGeneration generation: UInt64) async {
        let id = state.withLockedValue { state -> UInt64 in
            state.nextWaiterId &+= 1
            return state.nextWaiterId
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLockedValue { state -> Bool in
                    if state.generation != generation || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLockedValue { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }
}
