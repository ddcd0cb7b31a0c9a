import Foundation

/// The persisted part of the hub's state, `state.json`.
struct PersistedState: Sendable, Codable {
    var formatVersion = 1
    var identities: [IdentityRecord]
    /// The event sources routed to the built-in endpoint (absent in files of older versions).
    var routedEventSources: [MessageSource]?
    /// The provisioning service's enrollments and registrations (absent in files of older versions).
    var provisioning: ProvisioningPersistedState?
}
