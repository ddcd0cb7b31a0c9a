import IoTHubProtocol
import NIOConcurrencyHelpers

/// Operations waiting for the hub's answer, by request id, each with a time limit.
///
/// An id is registered before its request is sent, so an answer that comes back before the
/// sender starts waiting is kept, not lost.
final class PendingResponses<Value: Sendable>: Sendable {
    private enum Slot {
        case waiting(CheckedContinuation<Value, any Error>?)
        case done(Result<Value, IoTHubError>)
    }

    private let slots = NIOLockedValueBox([String: Slot]())

    /// Registers `id`, runs `send`, then waits up to `timeout` for ``complete(_:with:)`` or
    /// ``fail(_:with:)``.
    func wait(for id: String, timeout: Duration, send: () async throws(IoTHubError) -> Void) async throws(IoTHubError) -> Value {
        slots.withLockedValue { $0[id] = .waiting(nil) }
        do {
            try await send()
        } catch {
            slots.withLockedValue { _ = $0.removeValue(forKey: id) }
            throw error
        }
        let timer = Task {
            try await Task.sleep(for: timeout)
            fail(id, with: .operationTimeout("no answer from the hub within \(timeout)"))
        }
        defer { timer.cancel() }
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Value, any Error>) in
                    let finished: Result<Value, IoTHubError>? = slots.withLockedValue { slots in
                        switch slots[id] {
                        case .done(let result)?:
                            slots[id] = nil
                            return result
                        case .waiting?:
                            slots[id] = .waiting(continuation)
                            return nil
                        case nil:
                            return .failure(.operationCancelled("the operation was abandoned"))
                        }
                    }
                    if let finished { continuation.resume(with: finished.mapError { $0 as any Error }) }
                }
            } onCancel: {
                fail(id, with: .operationCancelled("the caller stopped waiting"))
            }
        } catch let error as IoTHubError {
            throw error
        } catch {
            throw .clientError("\(error)")
        }
    }

    func complete(_ id: String, with value: Value) {
        finish(id, .success(value))
    }

    func fail(_ id: String, with error: IoTHubError) {
        finish(id, .failure(error))
    }

    private func finish(_ id: String, _ result: Result<Value, IoTHubError>) {
        let continuation: CheckedContinuation<Value, any Error>? = slots.withLockedValue { slots in
            switch slots[id] {
            case .waiting(let continuation?)?:
                slots[id] = nil
                return continuation
            case .waiting(nil)?:
                slots[id] = .done(result)
                return nil
            case .done?, nil:
                return nil
            }
        }
        continuation?.resume(with: result.mapError { $0 as any Error })
    }

    func failAll(with error: IoTHubError) {
        let ids = slots.withLockedValue { Array($0.keys) }
        ids.forEach { fail($0, with: error) }
    }
}
