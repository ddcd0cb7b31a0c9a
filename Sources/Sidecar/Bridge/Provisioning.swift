public import FoundationEssentials
public import IoTHubDevice
public import IoTHubProtocol

/// What the sidecar knows of its Device Provisioning Service registration (`serve
/// --dps-id-scope`): shown in `GET /status`, checked by `GET /readyz`, renewed by
/// `POST /provisioning`.
public struct ProvisioningReport: Sendable, Equatable {
    public var idScope: String
    public var registrationId: String
    /// The assignment in use; nil when no registration has succeeded yet.
    public var result: RegistrationResult?
    /// When ``result`` was registered.
    public var registeredAt: Date?
    /// `dps` (registered by this process) or `cache` (read from the state directory).
    public var source: String?
    /// Why the last registration failed, if it did.
    public var lastError: IoTHubError?

    public init(
        idScope: String, registrationId: String, result: RegistrationResult? = nil, registeredAt: Date? = nil,
        source: String? = nil,
        lastError: IoTHubError? = nil
    ) {
        self.idScope = idScope
        self.registrationId = registrationId
        self.result = result
        self.registeredAt = registeredAt
        self.source = source
        self.lastError = lastError
    }

    /// The `provisioning` member of `/status` and the answer of `POST /provisioning`.
    var json: JSONValue {
        var members: [String: JSONValue] = ["idScope": .string(idScope), "registrationId": .string(registrationId)]
        if let result {
            let optional: [(String, String?)] = [
                ("assignedHub", result.assignedHub), ("deviceId", result.deviceId), ("status", result.status),
                ("substatus", result.substatus),
                ("createdDateTimeUtc", result.createdDateTimeUtc),
                ("lastUpdatedDateTimeUtc", result.lastUpdatedDateTimeUtc), ("source", source),
            ]
            for case (let key, let value?) in optional { members[key] = .string(value) }
            if let payload = result.payload { members["payload"] = payload }
        }
        if let registeredAt { members["registeredAt"] = .string(Timestamp.string(registeredAt)) }
        if let lastError { members["lastError"] = SidecarEvent.lastError(lastError) }
        return .object(members)
    }
}

/// The sidecar's provisioning, as the command line runs it: the bridge asks it for the report,
/// to register again on demand, and what to do when the hub refuses the identity.
public protocol ProvisioningController: Sendable {
    /// The registration in use and the last failure.
    var report: ProvisioningReport { get }
    /// Registers again now (`POST /provisioning`) and returns the new report; throws the
    /// registration's error.
    func reprovision() async throws(IoTHubError) -> ProvisioningReport
    /// The hub refused the identity (`error`, a `CredentialError`: the device was deleted,
    /// disabled or moved): registers again and returns whether connecting again may now work
    /// (the same hub and device id were assigned).
    func identityRefused(_ error: IoTHubError) async -> Bool
}

extension SidecarEvent {
    /// The provisioning changed (a new registration, or a failed one).
    static func provisioning(_ report: ProvisioningReport) -> SidecarEvent {
        SidecarEvent(name: "provisioning", data: report.json)
    }
}
