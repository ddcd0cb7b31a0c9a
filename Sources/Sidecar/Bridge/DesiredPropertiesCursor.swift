import AsyncPrimitives
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
    }

    let patchHistory: Int
    private let state = NIOLockedValueBox(State())
    /// Moves on with every new version: what pollers wait on.
    private let versionChanged = ChangeSignal()

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
            // Read before looking: a version that comes after the look moves it on, and the
            // wait below returns at once.
            let generation = versionChanged.generation
            if let update = current(since: since) { return update }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero, !Task.isCancelled else { return nil }
            await versionChanged.wait(afterGeneration: generation, timeout: remaining)
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
        let changed = state.withLockedValue { state -> Bool in
            let before = state.version
            change(&state)
            return state.version != before
        }
        if changed { versionChanged.signal() }
    }
}
