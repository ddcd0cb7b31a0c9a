public import IoTHubProtocol

/// What the Device Provisioning Service answered to a registration (the Python SDK's
/// `RegistrationResult` with its `registration_state`): which hub the device was assigned to,
/// under which device id, and why.
public struct RegistrationResult: Sendable, Hashable, Codable {
    /// The operation's id at DPS.
    public var operationId: String
    /// `assigned` (the only status ``ProvisioningDeviceClient/register(payload:)`` returns);
    /// `failed` and `disabled` are thrown as errors.
    public var status: String
    public var registrationId: String
    /// The IoT hub's host name the device belongs to.
    public var assignedHub: String?
    /// The device id to connect with at ``assignedHub``.
    public var deviceId: String?
    /// `initialAssignment`, `deviceDataMigrated`, `deviceDataReset` or
    /// `reprovisionedToInitialAssignment`.
    public var substatus: String?
    /// When the registration was first made (ISO 8601, UTC, as DPS sent it).
    public var createdDateTimeUtc: String?
    /// When it last changed (ISO 8601, UTC, as DPS sent it).
    public var lastUpdatedDateTimeUtc: String?
    public var etag: String?
    /// The custom payload DPS returned (from a custom allocation), if any.
    public var payload: JSONValue?
    /// DPS's error code and message, for a registration that did not succeed.
    public var errorCode: Int?
    public var errorMessage: String?

    public init(
        operationId: String, status: String, registrationId: String, assignedHub: String? = nil,
        deviceId: String? = nil,
        substatus: String? = nil, createdDateTimeUtc: String? = nil, lastUpdatedDateTimeUtc: String? = nil,
        etag: String? = nil,
        payload: JSONValue? = nil, errorCode: Int? = nil, errorMessage: String? = nil
    ) {
        self.operationId = operationId
        self.status = status
        self.registrationId = registrationId
        self.assignedHub = assignedHub
        self.deviceId = deviceId
        self.substatus = substatus
        self.createdDateTimeUtc = createdDateTimeUtc
        self.lastUpdatedDateTimeUtc = lastUpdatedDateTimeUtc
        self.etag = etag
        self.payload = payload
        self.errorCode = errorCode
        self.errorMessage = errorMessage
    }

    /// Reads an operation status document (`{"operationId", "status", "registrationState": {…}}`).
    init(operationStatus document: JSONValue, registrationId: String) {
        let state = document["registrationState"]
        func text(_ value: JSONValue?) -> String? {
            if case .string(let string)? = value { return string }
            return nil
        }
        self.init(
            operationId: text(document["operationId"]) ?? "", status: text(document["status"]) ?? "",
            registrationId: text(state?["registrationId"]) ?? registrationId, assignedHub: text(state?["assignedHub"]),
            deviceId: text(state?["deviceId"]), substatus: text(state?["substatus"]),
            createdDateTimeUtc: text(state?["createdDateTimeUtc"]),
            lastUpdatedDateTimeUtc: text(state?["lastUpdatedDateTimeUtc"]), etag: text(state?["etag"]),
            payload: state?["payload"].flatMap { $0 == .null ? nil : $0 }, errorCode: state?["errorCode"]?.intValue,
            errorMessage: text(state?["errorMessage"]))
    }
}
