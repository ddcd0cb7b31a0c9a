import Foundation
import IoTHubProtocol

/// How the devices of an enrollment prove who they are.
struct ProvisioningAttestation: Sendable, Codable, Equatable {
    enum Kind: String, Sendable, Codable {
        case symmetricKey
        case x509
    }

    var type: Kind
    /// Symmetric keys (base64): the device's own (individual) or the group key (group).
    var primaryKey: String?
    var secondaryKey: String?
    /// X.509 certificates as base64 DER: the device's certificate (individual, matched by
    /// thumbprint) or the certificate that signs the devices' certificates (group).
    var primaryCertificate: String?
    var secondaryCertificate: String?

    var keys: [String] { [primaryKey, secondaryKey].compactMap { $0 } }
    var certificates: [[UInt8]] {
        [primaryCertificate, secondaryCertificate].compactMap {
            $0.flatMap { Data(base64Encoded: $0) }.map { Array($0) }
        }
    }
}

/// What DPS does when a device registers again.
struct ReprovisionPolicy: Sendable, Codable, Equatable {
    /// Re-evaluate the hub assignment at every registration (LocalHub has one hub, so a new
    /// registration keeps it either way; with false the substatus of the first one stays).
    var updateHubAssignment = true
    /// Keep the device's twin (true) or reset it to the enrollment's initial twin (false).
    var migrateDeviceData = true
}

/// An individual enrollment (one registration id) or an enrollment group (many devices with
/// one group key or signing certificate), as DPS keeps them.
struct Enrollment: Sendable, Codable {
    /// The registration id (individual) or the enrollment group id (group).
    var id: String
    var isGroup: Bool
    /// The device id to create (individual only); nil means the registration id.
    var deviceId: String?
    var attestation: ProvisioningAttestation
    /// `enabled` or `disabled`.
    var provisioningStatus: String
    var reprovisionPolicy: ReprovisionPolicy
    /// `hashed` (the default), `static`, `geoLatency` or `custom`: with LocalHub as the only
    /// linked hub, every policy assigns LocalHub.
    var allocationPolicy: String?
    var iotHubs: [String]?
    var iotHubHostName: String?
    var initialTags: [String: JSONValue]?
    var initialDesired: [String: JSONValue]?
    var iotEdge: Bool
    var customAllocationDefinition: JSONValue?
    var optionalDeviceInformation: JSONValue?
    var etagCounter: Int
    var created: Date
    var lastUpdated: Date

    var etag: String { IdentityRecord.etag(etagCounter) }
    var isEnabled: Bool { provisioningStatus == "enabled" }
}

/// The state of one device's registration, as DPS keeps it (`/registrations/{id}`).
struct RegistrationRecord: Sendable, Codable {
    var registrationId: String
    /// The group the device registered through; nil for an individual enrollment.
    var enrollmentGroupId: String?
    var deviceId: String?
    var assignedHub: String?
    /// `assigned`, `failed` or `disabled`.
    var status: String
    /// `initialAssignment`, `reprovisionedToInitialAssignment` (see ``ReprovisionPolicy``).
    var substatus: String?
    var errorCode: Int?
    var errorMessage: String?
    /// The payload returned to the device in the last registration.
    var payload: JSONValue?
    var created: Date
    var lastUpdated: Date
    var etagCounter: Int
    /// How many registration requests this device made that the service handled.
    var registrationCount: Int

    var etag: String { IdentityRecord.etag(etagCounter) }
}

/// The persisted part of the provisioning service (in `state.json`).
struct ProvisioningPersistedState: Sendable, Codable {
    var enrollments: [Enrollment]
    var enrollmentGroups: [Enrollment]
    var registrations: [RegistrationRecord]
}
