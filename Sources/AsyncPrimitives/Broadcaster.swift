import NIOConcurrencyHelpers

/// A change in a ``Broadcaster``'s listeners, as its observer hears of it.
package enum ListenerChange: Sendable {
    /// A listener began listening.
    case added
    /// A listener stopped (its stream was dropped, cancelled or finished).
    case removed
}

/// Hands every value to every current listener, each through its own `AsyncStream`.
///
/// A broadcaster can keep what comes while nobody listens for the next listener
/// (`keepingUndelivered`), and tells an observer whenever listeners come or go, so that its
/// owner can stop asking for values nobody wants (the device client unsubscribes).
package final class Broadcaster<Element: Sendable>: Sendable {
    private struct State {
        var nextId = 0
        var continuations: [Int: AsyncStream<Element>.Continuation] = [:]
        var finished = false
        /// Values that came while nobody listened, in order, for the next listener.
        var undelivered: [Element] = []
        var observer: (@Sendable (ListenerChange) -> Void)?
    }

    private let state = NIOLockedValueBox(State())
    private let bufferingPolicy: AsyncStream<Element>.Continuation.BufferingPolicy
    private let keepsUndelivered: Bool

    /// - Parameter keepingUndelivered: a value yielded while nobody listens is kept and handed to
    ///   the next listener first, instead of being dropped.
    package init(
        bufferingPolicy: AsyncStream<Element>.Continuation.BufferingPolicy = .unbounded,
        keepingUndelivered: Bool = false
    ) {
        self.bufferingPolicy = bufferingPolicy
        self.keepsUndelivered = keepingUndelivered
    }

    /// Calls `observer` after each listener comes or goes (not under any lock; changes may be
    /// reported in a different order than they happened: read ``hasListeners`` for the state).
    package func observeListeners(_ observer: @escaping @Sendable (ListenerChange) -> Void) {
        state.withLockedValue { $0.observer = observer }
    }

    /// Whether anyone listens now.
    package var hasListeners: Bool {
        state.withLockedValue { !$0.continuations.isEmpty }
    }

    /// How many values wait for the next listener.
    package var undeliveredCount: Int {
        state.withLockedValue { $0.undelivered.count }
    }

    /// A new stream that receives every later value until it is dropped or ``finish()`` (the
    /// first new stream also gets what was kept while nobody listened).
    package func stream() -> AsyncStream<Element> {
        let (stream, continuation) = AsyncStream.makeStream(of: Element.self, bufferingPolicy: bufferingPolicy)
        let registered: (id: Int, observer: (@Sendable (ListenerChange) -> Void)?)? = state.withLockedValue { state in
            guard !state.finished else { return nil }
            state.nextId += 1
            state.continuations[state.nextId] = continuation
            // Under the lock, so that no later value overtakes them.
            for element in state.undelivered { continuation.yield(element) }
            state.undelivered = []
            return (state.nextId, state.observer)
        }
        guard let registered else {
            continuation.finish()
            return stream
        }
        let id = registered.id
        continuation.onTermination = { [weak self] _ in
            guard let self else { return }
            let observer = self.state.withLockedValue { state -> (@Sendable (ListenerChange) -> Void)? in
                guard state.continuations.removeValue(forKey: id) != nil else { return nil }
                return state.observer
            }
            observer?(.removed)
        }
        registered.observer?(.added)
        return stream
    }

    package func yield(_ element: Element) {
        let continuations = state.withLockedValue { state -> [AsyncStream<Element>.Continuation] in
            if state.continuations.isEmpty, keepsUndelivered, !state.finished {
                state.undelivered.append(element)
            }
            return Array(state.continuations.values)
        }
        var delivered = false
        for continuation in continuations {
            if case .terminated = continuation.yield(element) { continue }
            delivered = true
        }
        guard keepsUndelivered, !continuations.isEmpty, !delivered else { return }
        // Every listener went away while the value was handed out: it is kept, or given to one
        // that came meanwhile.
        let late = state.withLockedValue { state -> [AsyncStream<Element>.Continuation] in
            if state.continuations.isEmpty, !state.finished { state.undelivered.append(element) }
            return Array(state.continuations.values)
        }
        for continuation in late { continuation.yield(element) }
    }

    package func finish() {
        let continuations = state.withLockedValue { state in
            state.finished = true
            defer { state.continuations.removeAll() }
            return Array(state.continuations.values)
        }
        continuations.forEach { $0.finish() }
    }
}
