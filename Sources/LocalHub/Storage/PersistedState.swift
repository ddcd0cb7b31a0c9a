import Foundation

/// The persisted part of the hub's state, `state.json`.
struct PersistedState: Sendable, Codable {
    var formatVersion = 1
    var identities: [IdentityRecord]
}
