import NIOConcurrencyHelpers

/// A first-in-first-out queue whose consumers wait, in arrival order, for the first element they
/// accept: the long-poll endpoints hand each item to exactly one poller, oldest poller first.
/// A waiting consumer gives up after its timeout or when its task is cancelled.
package final class FairQueue<Element: Sendable>: Sendable {
    private struct Waiter {
        var id: UInt64
        var accepts: @Sendable (Element) -> Bool
        var continuation: CheckedContinuation<Element?, Never>
    }

    private struct State {
        var items: [Element] = []
        var waiters: [Waiter] = []
        var lastWaiterId: UInt64 = 0
        /// Waiters whose time ran out (or whose task was cancelled) before they were registered.
        var givenUp: Set<UInt64> = []
    }

    private let state = NIOLockedValueBox(State())

    package init() {}

    /// Adds an element at the back (or the front, for one that goes back to the queue), handing
    /// it straight to the longest-waiting consumer that accepts it.
    package func push(_ element: Element, atFront: Bool = false) {
        let waiter = state.withLockedValue { state -> Waiter? in
            if let index = state.waiters.firstIndex(where: { $0.accepts(element) }) {
                return state.waiters.remove(at: index)
            }
            if atFront { state.items.insert(element, at: 0) } else { state.items.append(element) }
            return nil
        }
        waiter?.continuation.resume(returning: element)
    }

    /// The oldest element that `accepts` takes, waiting up to `timeout` for one; nil on timeout
    /// or cancellation.
    package func pop(timeout: Duration, where accepts: @escaping @Sendable (Element) -> Bool = { _ in true }) async
        -> Element?
    {
        if timeout <= .zero { return take(where: accepts) }
        let id = state.withLockedValue { state -> UInt64 in
            state.lastWaiterId += 1
            return state.lastWaiterId
        }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            if !Task.isCancelled { self.giveUp(id) }
        }
        defer {
            timer.cancel()
            _ = state.withLockedValue { $0.givenUp.remove(id) }
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Element?, Never>) in
                let found = state.withLockedValue { state -> Element?? in
                    if let index = state.items.firstIndex(where: accepts) {
                        return .some(state.items.remove(at: index))
                    }
                    // The timer or a cancellation may have come first: then there is no wait.
                    if Task.isCancelled || state.givenUp.remove(id) != nil { return .some(nil) }
                    state.waiters.append(Waiter(id: id, accepts: accepts, continuation: continuation))
                    return nil
                }
                if let found { continuation.resume(returning: found) }
            }
        } onCancel: {
            giveUp(id)
        }
    }

    /// The oldest element that `accepts` takes, without waiting.
    private func take(where accepts: (Element) -> Bool) -> Element? {
        state.withLockedValue { state in
            state.items.firstIndex(where: accepts).map { state.items.remove(at: $0) }
        }
    }

    private func giveUp(_ id: UInt64) {
        let waiter = state.withLockedValue { state -> Waiter? in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else {
                // Not registered yet (or already served): a registration still to come must not wait.
                state.givenUp.insert(id)
                return nil
            }
            return state.waiters.remove(at: index)
        }
        waiter?.continuation.resume(returning: nil)
    }

    /// Removes the elements `matching` selects; returns how many.
    @discardableResult
    package func removeAll(where matching: (Element) -> Bool) -> Int {
        state.withLockedValue { state in
            let before = state.items.count
            state.items.removeAll(where: matching)
            return before - state.items.count
        }
    }

    /// Elements waiting for a consumer.
    package var count: Int { state.withLockedValue { $0.items.count } }
}
