import IoTHubProtocol
import NIOConcurrencyHelpers

/// The desired properties as pollers of `GET /twin/desired?since=V` see them: the current
/// document and the recent patches, by `$version`. A poll returns as soon as the version passes
/// `since`, so no patch can fall between two polls.
final class DesiredPropertiesCursor: Sendable {
    /// What a poll returns.
    struct Update: Sendable, Equatable {
        /// The whole desired document, `$version` included.
        var desired: JSONValue
        var version: Int
        /// The patches after `since`, oldest first, when the cursor still holds all of them.
        var patches: [JSONValue]?
    }

    private struct State {
        var desired: JSONValue = ["$version": 0]
        var version = 0
        var patches: [(version: Int, patch: JSONValue)] = []
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var lastWaiterId: UInt64 = 0
        /// Waiters woken (timer, cancellation) before they were registered.
        var woken: Set<UInt64> = []
    }

    let patchHistory: Int
    private let state = NIOLockedValueBox(State())

    init(patchHistory: Int = 100) {
        self.patchHistory = patchHistory
    }

    /// Sets the whole document (after a twin read). Patches older than it are forgotten.
    func replace(desired: TwinProperties) {
        update { state in
            guard desired.version >= state.version else { return }
            if desired.version != state.version { state.patches.removeAll() }
            state.desired = desired.json
            state.version = desired.version
        }
    }

    /// Applies a patch from the hub (a JSON object with `$version`).
    func apply(patch: JSONValue) {
        guard let version = patch["$version"]?.intValue else { return }
        update { state in
            guard version > state.version else { return }
            // A gap means a patch was missed: the history can no longer answer with patches alone.
            if version != state.version + 1 { state.patches.removeAll() }
            var merged = state.desired.merging(patch)
            if case .object(var members) = merged {
                members["$version"] = .integer(Int64(version))
                merged = .object(members)
            }
            state.desired = merged
            state.version = version
            state.patches.append((version, patch))
            if state.patches.count > patchHistory { state.patches.removeFirst(state.patches.count - patchHistory) }
        }
    }

    /// Returns when the version passes `since`, or nil after `timeout`.
    func poll(since: Int, timeout: Duration) async -> Update? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let update = current(since: since) { return update }
            guard ContinuousClock.now < deadline, !Task.isCancelled else { return nil }
            await waitForChange(since: since, until: deadline)
        }
    }

    func current(since: Int) -> Update? {
        state.withLockedValue { state in
            guard state.version > since else { return nil }
            let after = state.patches.filter { $0.version > since }
            let complete = after.first?.version == since + 1 && after.count == state.version - since
            return Update(desired: state.desired, version: state.version, patches: complete ? after.map(\.patch) : nil)
        }
    }

    private func update(_ change: (inout State) -> Void) {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            let before = state.version
            change(&state)
            guard state.version != before else { return [] }
            defer { state.waiters.removeAll() }
            return Array(state.waiters.values)
        }
        waiters.forEach { $0.resume() }
    }

    private func waitForChange(since: Int, until deadline: ContinuousClock.Instant) async {
        let id = state.withLockedValue { state -> UInt64 in
            state.lastWaiterId += 1
            return state.lastWaiterId
        }
        let timer = Task {
            try? await Task.sleep(until: deadline, clock: .continuous)
            if !Task.isCancelled { self.wake(id) }
        }
        defer {
            timer.cancel()
            _ = state.withLockedValue { $0.woken.remove(id) }
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLockedValue { state -> Bool in
                    // Checked under the lock that updates take: a change between the caller's look
                    // and this registration is not missed.
                    if Task.isCancelled || state.version > since || state.woken.remove(id) != nil { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            wake(id)
        }
    }

    private func wake(_ id: UInt64) {
        state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiters.removeValue(forKey: id) else {
                // Not registered yet: its registration must not wait.
                state.woken.insert(id)
                return nil
            }
            return waiter
        }?.resume()
    }
}
