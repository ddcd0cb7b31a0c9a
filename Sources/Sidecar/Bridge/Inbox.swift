import AsyncPrimitives
import Foundation
import IoTHubProtocol
import NIOConcurrencyHelpers

/// Cloud-to-device messages held for HTTP pollers (`GET /inbox`), with locks.
///
/// MQTT acknowledges a message as soon as it reaches the sidecar, so the sidecar itself must not
/// lose it: a poller receives a message under a lock; `complete` removes it, `abandon` or an
/// expired lock makes it deliverable again with a higher delivery count. A poller that dies
/// therefore loses nothing.
final class Inbox: Sendable {
    /// A message handed to a poller.
    struct Lease: Sendable {
        var lockToken: String
        var message: Message
        /// 1 on the first delivery.
        var deliveryCount: Int
        var lockedUntil: Date
    }

    enum LeaseError: Error, Equatable {
        /// No message holds this lock (completed, expired and redelivered, or never issued).
        case unknownLockToken
    }

    private struct Entry {
        var message: Message
        var deliveryCount = 0
        var lock: (token: String, until: Date, expiry: Task<Void, Never>)?
    }

    private struct State {
        var entries: [UInt64: Entry] = [:]
        var lastId: UInt64 = 0
        var locks: [String: UInt64] = [:]
        var dropped = 0
    }

    let lockDuration: Duration
    let capacity: Int
    private let available = FairQueue<UInt64>()
    private let state = NIOLockedValueBox(State())

    init(lockDuration: Duration = .seconds(60), capacity: Int = 10_000) {
        self.lockDuration = lockDuration
        self.capacity = capacity
    }

    /// Takes a message from the hub. Beyond `capacity` the oldest waiting message is dropped
    /// (and counted), so a sidecar nobody polls cannot grow without bound.
    func deliver(_ message: Message) {
        let (id, evicted) = state.withLockedValue { state -> (UInt64, UInt64?) in
            state.lastId += 1
            state.entries[state.lastId] = Entry(message: message)
            var evicted: UInt64?
            if state.entries.count > capacity, let oldest = state.entries.filter({ $0.value.lock == nil }).keys.min() {
                state.entries[oldest] = nil
                state.dropped += 1
                evicted = oldest
            }
            return (state.lastId, evicted)
        }
        if let evicted { available.removeAll { $0 == evicted } }
        available.push(id)
    }

    /// The oldest deliverable message, locked for ``lockDuration``; nil if none came in `timeout`.
    func receive(timeout: Duration) async -> Lease? {
        while let id = await available.pop(timeout: timeout) {
            if let lease = lock(id) { return lease }
            // The entry went away (evicted) between queueing and popping: try the next one.
        }
        return nil
    }

    private func lock(_ id: UInt64) -> Lease? {
        let token = UUID().uuidString.lowercased()
        let duration = lockDuration
        let until = Date().addingTimeInterval(TimeInterval(duration.components.seconds) + TimeInterval(duration.components.attoseconds) / 1e18)
        return state.withLockedValue { state -> Lease? in
            guard var entry = state.entries[id] else { return nil }
            entry.deliveryCount += 1
            let expiry = Task { [weak self] in
                try? await Task.sleep(for: duration)
                guard !Task.isCancelled else { return }
                self?.release(token, requeue: true)
            }
            entry.lock = (token, until, expiry)
            state.entries[id] = entry
            state.locks[token] = id
            return Lease(lockToken: token, message: entry.message, deliveryCount: entry.deliveryCount, lockedUntil: until)
        }
    }

    /// Removes a received message for good (`DELETE /inbox/{lockToken}`).
    func complete(_ lockToken: String) throws(LeaseError) {
        let removed = state.withLockedValue { state -> Entry? in
            guard let id = state.locks.removeValue(forKey: lockToken) else { return nil }
            return state.entries.removeValue(forKey: id)
        }
        guard let removed else { throw .unknownLockToken }
        removed.lock?.expiry.cancel()
    }

    /// Makes a received message deliverable again at once (`POST /inbox/{lockToken}/abandon`).
    func abandon(_ lockToken: String) throws(LeaseError) {
        guard release(lockToken, requeue: true) else { throw .unknownLockToken }
    }

    /// Takes back a message that was locked but never reached its poller (the poll's
    /// connection closed first): deliverable again at once, and not counted as delivered.
    func giveBack(_ lockToken: String) throws(LeaseError) {
        guard release(lockToken, requeue: true, uncount: true) else { throw .unknownLockToken }
    }

    @discardableResult
    private func release(_ lockToken: String, requeue: Bool, uncount: Bool = false) -> Bool {
        let released = state.withLockedValue { state -> (UInt64, Task<Void, Never>?)? in
            guard let id = state.locks.removeValue(forKey: lockToken), var entry = state.entries[id] else { return nil }
            let expiry = entry.lock?.expiry
            entry.lock = nil
            if uncount { entry.deliveryCount -= 1 }
            state.entries[id] = entry
            return (id, expiry)
        }
        guard let (id, expiry) = released else { return false }
        expiry?.cancel()
        // Back at the front: it is older than anything that arrived since.
        if requeue { available.push(id, atFront: true) }
        return true
    }

    /// Messages held (waiting or locked), and how many were dropped for capacity.
    var depth: (waiting: Int, locked: Int, dropped: Int) {
        state.withLockedValue { state in
            let locked = state.locks.count
            return (state.entries.count - locked, locked, state.dropped)
        }
    }
}
