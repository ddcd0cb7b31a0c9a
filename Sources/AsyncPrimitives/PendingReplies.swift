import NIOConcurrencyHelpers

/// Requests waiting for their replies, by key (a request id, an MQTT packet id).
///
/// Every race between a reply and its waiter is settled here, under one lock:
/// - a reply that comes before its waiter registers is kept, when the key was announced with
///   ``expect(_:)`` or the registry keeps early replies (keys handed out before the caller can
///   register, such as MQTT packet ids);
/// - a waiter that gives up (cancelled, timed out, failed) leaves a tombstone where early
///   replies are kept, so its late reply cannot complete a later request that reuses the key;
/// - a waiter cancelled before it registered returns at once.
package final class PendingReplies<Key: Hashable & Sendable, Value: Sendable, Failure: Error>: Sendable {
    /// Called once with the reply or the failure; on whatever thread settles it, under no lock.
    package typealias Waiter = @Sendable (Result<Value, Failure>) -> Void

    private enum Slot {
        /// Announced; no waiter and no reply yet.
        case expected
        case waiting(Waiter, deadline: ContinuousClock.Instant?)
        case replied(Result<Value, Failure>)
        /// Its waiter gave up; a reply that still comes is dropped.
        case abandoned
    }

    private let slots = NIOLockedValueBox([Key: Slot]())
    private let keepsEarlyReplies: Bool

    /// - Parameter keepingEarlyReplies: keep a reply for a key nobody announced or waits for
    ///   (for a waiter that registers later), instead of dropping it.
    package init(keepingEarlyReplies: Bool) {
        self.keepsEarlyReplies = keepingEarlyReplies
    }

    /// Announces `key` before its request goes out: a reply may then come before the wait.
    package func expect(_ key: Key) {
        slots.withLockedValue { $0[key] = .expected }
    }

    /// Forgets an announced key whose request could not be sent.
    package func forget(_ key: Key) {
        slots.withLockedValue { slots in
            if case .expected? = slots[key] { slots[key] = nil }
        }
    }

    /// Registers `waiter` for `key`, to be failed by ``failOverdue(now:with:)`` after `deadline`.
    /// Returns the reply instead (and does not keep the waiter) when it is already there.
    package func register(_ key: Key, deadline: ContinuousClock.Instant? = nil, waiter: @escaping Waiter) -> Result<
        Value, Failure
    >? {
        slots.withLockedValue { slots in
            if case .replied(let result)? = slots[key] {
                slots[key] = nil
                return result
            }
            // A tombstone is moot once the key is handed out again: its reply came or never will.
            slots[key] = .waiting(waiter, deadline: deadline)
            return nil
        }
    }

    /// Waits for the reply to `key`. Cancelling the caller fails the wait with `cancelled()`
    /// and abandons the key.
    package func reply(
        to key: Key, deadline: ContinuousClock.Instant? = nil, cancelled: @escaping @Sendable () -> Failure
    ) async throws(Failure) -> Value {
        let result: Result<Value, Failure> = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<Value, Failure>, Never>) in
                let ready = slots.withLockedValue { slots -> Result<Value, Failure>? in
                    if case .replied(let result)? = slots[key] {
                        slots[key] = nil
                        return result
                    }
                    // Cancellation sets the flag before its handler runs: either the handler
                    // finds the waiter registered, or the flag is seen here.
                    if Task.isCancelled {
                        slots[key] = keepsEarlyReplies ? .abandoned : nil
                        return .failure(cancelled())
                    }
                    slots[key] = .waiting({ continuation.resume(returning: $0) }, deadline: deadline)
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            abandon(key, with: cancelled())
        }
        return try result.get()
    }

    /// Settles `key` with a reply (or a failure the other side sent).
    package func complete(_ key: Key, with result: Result<Value, Failure>) {
        let waiter = slots.withLockedValue { slots -> Waiter? in
            switch slots[key] {
            case .waiting(let waiter, _)?:
                slots[key] = nil
                return waiter
            case .expected?:
                slots[key] = .replied(result)
            case .abandoned?:
                slots[key] = nil
            case nil:
                if keepsEarlyReplies { slots[key] = .replied(result) }
            case .replied?:
                // A second reply to the same key: the first one counts.
                break
            }
            return nil
        }
        waiter?(result)
    }

    /// The waiter of `key` gives up: it is called with `error`, and a reply that still comes is
    /// dropped.
    package func abandon(_ key: Key, with error: Failure) {
        let waiter = slots.withLockedValue { slots -> Waiter? in
            switch slots[key] {
            case .waiting(let waiter, _)?:
                slots[key] = keepsEarlyReplies ? .abandoned : nil
                return waiter
            case .expected?, .replied?:
                slots[key] = nil
            case nil:
                if keepsEarlyReplies { slots[key] = .abandoned }
            case .abandoned?:
                break
            }
            return nil
        }
        waiter?(.failure(error))
    }

    /// Fails every waiter (a disconnect): their replies, if they still come, are dropped where
    /// early replies are kept. Kept replies and announcements are forgotten.
    package func failAll(with error: Failure) {
        let waiters = slots.withLockedValue { slots -> [Waiter] in
            var waiters: [Waiter] = []
            for (key, slot) in slots {
                switch slot {
                case .waiting(let waiter, _):
                    waiters.append(waiter)
                    slots[key] = keepsEarlyReplies ? .abandoned : nil
                case .expected, .replied:
                    slots[key] = nil
                case .abandoned:
                    break
                }
            }
            return waiters
        }
        waiters.forEach { $0(.failure(error)) }
    }

    /// Fails the waiters whose deadline is before `now`.
    package func failOverdue(now: ContinuousClock.Instant, with error: @autoclosure () -> Failure) {
        let waiters = slots.withLockedValue { slots -> [Waiter] in
            var waiters: [Waiter] = []
            for (key, slot) in slots {
                if case .waiting(let waiter, let deadline?) = slot, deadline < now {
                    waiters.append(waiter)
                    slots[key] = keepsEarlyReplies ? .abandoned : nil
                }
            }
            return waiters
        }
        guard !waiters.isEmpty else { return }
        let error = error()
        waiters.forEach { $0(.failure(error)) }
    }

    /// Keys with a waiter registered now (for tests and gauges).
    package var waitingCount: Int {
        slots.withLockedValue { slots in
            slots.values.reduce(0) { count, slot in
                if case .waiting = slot { return count + 1 }
                return count
            }
        }
    }
}
