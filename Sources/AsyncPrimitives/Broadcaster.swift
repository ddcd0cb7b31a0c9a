import NIOConcurrencyHelpers

/// Hands every value to every current listener, each through its own `AsyncStream`.
package final class Broadcaster<Element: Sendable>: Sendable {
    private struct State {
        var nextId = 0
        var continuations: [Int: AsyncStream<Element>.Continuation] = [:]
        var finished = false
    }

    private let state = NIOLockedValueBox(State())
    private let bufferingPolicy: AsyncStream<Element>.Continuation.BufferingPolicy

    package init(bufferingPolicy: AsyncStream<Element>.Continuation.BufferingPolicy = .unbounded) {
        self.bufferingPolicy = bufferingPolicy
    }

    /// A new stream that receives every later value until it is dropped or ``finish()``.
    package func stream() -> AsyncStream<Element> {
        let (stream, continuation) = AsyncStream.makeStream(of: Element.self, bufferingPolicy: bufferingPolicy)
        let id: Int? = state.withLockedValue { state in
            guard !state.finished else { return nil }
            state.nextId += 1
            state.continuations[state.nextId] = continuation
            return state.nextId
        }
        guard let id else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLockedValue { $0.continuations.removeValue(forKey: id) }
        }
        return stream
    }

    package func yield(_ element: Element) {
        for continuation in state.withLockedValue({ Array($0.continuations.values) }) {
            continuation.yield(element)
        }
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
