import IoTHubProtocol
import NIOConcurrencyHelpers

/// The outcomes of a batch of publishes, filled in as PUBACKs (or failures) arrive; its one
/// waiter resumes when the last is in. The first outcome of an entry counts.
final class PublishBatch: Sendable {
    private struct State {
        var results: [Result<Void, IoTHubError>?]
        var remaining: Int
        var waiter: CheckedContinuation<[Result<Void, IoTHubError>], Never>?

        /// Every entry's outcome (all are in once `remaining` is 0).
        var outcomes: [Result<Void, IoTHubError>] {
            results.map { $0 ?? .failure(.clientError("no outcome")) }
        }
    }

    private let state: NIOLockedValueBox<State>

    init(count: Int) {
        state = NIOLockedValueBox(State(results: Array(repeating: nil, count: count), remaining: count))
    }

    func complete(_ index: Int, _ result: Result<Void, IoTHubError>) {
        let finished = state.withLockedValue {
            state -> (CheckedContinuation<[Result<Void, IoTHubError>], Never>, [Result<Void, IoTHubError>])? in
            guard state.results[index] == nil else { return nil }
            state.results[index] = result
            state.remaining -= 1
            guard state.remaining == 0, let waiter = state.waiter else { return nil }
            state.waiter = nil
            return (waiter, state.outcomes)
        }
        if let (waiter, results) = finished { waiter.resume(returning: results) }
    }

    /// Every entry's outcome, in order, once all are known.
    func results() async -> [Result<Void, IoTHubError>] {
        await withCheckedContinuation { continuation in
            let ready = state.withLockedValue { state -> [Result<Void, IoTHubError>]? in
                guard state.remaining > 0 else { return state.outcomes }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}
