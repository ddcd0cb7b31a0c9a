import Foundation
import IoTHubProtocol
import NIOConcurrencyHelpers
import X509

/// Who a DPS connection authenticated as: a registration id and the enrollment that admits it.
struct ProvisioningIdentity: Sendable, Equatable {
    var registrationId: String
    /// The group the device authenticated through; nil for its individual enrollment.
    var enrollmentGroupId: String?
    /// How the device will authenticate to the hub once assigned: the enrollment's keys (or
    /// the keys derived from the group's), or the thumbprints of its certificates.
    var deviceAuthentication: IdentityAuthentication
    /// When the SAS token expires (the connection is closed then, like IoT Hub's).
    var tokenExpiry: Date?
}

/// LocalHub's Device Provisioning Service: its ID scope and service policy, the enrollments,
/// enrollment groups and registration states, and the operations devices poll. The registry
/// side of a registration (creating the device) is the hub's (``Hub/register(_:request:now:)``).
///
/// All state sits behind one lock, never held while the hub's lock is taken.
final class ProvisioningService: Sendable {
    struct State: Sendable {
        var enrollments: [String: Enrollment] = [:]
        var groups: [String: Enrollment] = [:]
        var registrations: [String: RegistrationRecord] = [:]
        /// Finished registration operations by id, for the devices' status polls; the oldest
        /// are forgotten beyond ``ProvisioningService/maximumOperations``.
        var operations: [String: Operation] = [:]
        var operationOrder: [String] = []
    }

    struct Operation: Sendable {
        var registrationId: String
        var answer: JSONValue
    }

    static let policyName = "provisioningserviceowner"
    /// Finished operations kept for polls: with requests of at most 64 KiB, at most 64 MiB.
    static let maximumOperations = 1_000
    /// Seconds a device is told to wait before polling (`retry-after`).
    static let retryAfterSeconds = 1

    let idScope: String
    /// The host name of the service API (LocalHub's own: the service shares its HTTPS port).
    let hostName: String
    let policyKey: String
    let state: NIOLockedValueBox<State>

    init(idScope: String, hostName: String, policyKey: String, persisted: ProvisioningPersistedState?) {
        self.idScope = idScope
        self.hostName = hostName
        self.policyKey = policyKey
        var initial = State()
        for enrollment in persisted?.enrollments ?? [] { initial.enrollments[enrollment.id] = enrollment }
        for group in persisted?.enrollmentGroups ?? [] { initial.groups[group.id] = group }
        for record in persisted?.registrations ?? [] { initial.registrations[record.registrationId] = record }
        state = NIOLockedValueBox(initial)
    }

    /// A new ID scope in DPS's shape: `0ne` and eight upper-case hex digits.
    static func newIdScope() -> String {
        "0ne" + String(format: "%08X", UInt32.random(in: 0...UInt32.max))
    }

    /// The service policy's connection string (the provisioning service SDKs use it).
    var serviceConnectionString: ConnectionString {
        ConnectionString(
            hostName: hostName, sharedAccessKeyName: Self.policyName, credential: .sharedAccessKey(policyKey))
    }

    func snapshot() -> ProvisioningPersistedState {
        state.withLockedValue { state in
            ProvisioningPersistedState(
                enrollments: state.enrollments.values.sorted { $0.id < $1.id },
                enrollmentGroups: state.groups.values.sorted { $0.id < $1.id },
                registrations: state.registrations.values.sorted { $0.registrationId < $1.registrationId })
        }
    }

    // MARK: Devices

    /// Whether a CONNECT user name is a DPS one for this service's ID scope (so never an IoT
    /// Hub user name, whose first segment is the hub's host name).
    func isProvisioningUsername(_ username: String?) -> Bool {
        guard let username, let parsed = ProvisioningProtocol.Username(parsing: username) else { return false }
        return parsed.idScope.lowercased() == idScope.lowercased()
    }

    /// Checks a DPS CONNECT: the client id is the registration id of the user name, and the
    /// SAS token (signed with an individual enrollment's key, or with a key derived from an
    /// enrollment group's) or the client certificate (an individual enrollment's, or one
    /// signed by a group's signing certificate, with the registration id as common name)
    /// admits the device. An individual enrollment takes precedence over groups.
    func authenticate(_ credentials: ConnectCredentials, now: Date = Date()) -> Result<
        ProvisioningIdentity, ConnackPacket.ReturnCode
    > {
        guard let usernameText = credentials.username,
            let username = ProvisioningProtocol.Username(parsing: usernameText),
            username.idScope.lowercased() == idScope.lowercased()
        else { return .failure(.badUsernameOrPassword) }
        let registrationId = username.registrationId
        guard credentials.clientId == registrationId, ProvisioningProtocol.isValidRegistrationId(registrationId) else {
            return .failure(.identifierRejected)
        }
        let (individual, groups) = state.withLockedValue { state in
            (state.enrollments[registrationId], state.groups.values.sorted { $0.id < $1.id })
        }
        if let password = credentials.password {
            guard let text = password.getString(at: password.readerIndex, length: password.readableBytes),
                let token = try? SASToken(parsing: text)
            else { return .failure(.badUsernameOrPassword) }
            let resource = ProvisioningProtocol.resourceURI(idScope: idScope, registrationId: registrationId)
            guard token.resourceURI.lowercased() == resource.lowercased(),
                token.keyName == nil || token.keyName == ProvisioningProtocol.registrationKeyName,
                !token.isExpired(at: now)
            else { return .failure(.notAuthorized) }
            if let individual {
                guard individual.attestation.type == .symmetricKey,
                    individual.attestation.keys.contains(where: token.isSigned(withKey:))
                else {
                    return .failure(.notAuthorized)
                }
                let authentication = IdentityAuthentication(
                    type: .sas, primaryKey: individual.attestation.primaryKey,
                    secondaryKey: individual.attestation.secondaryKey)
                return .success(
                    ProvisioningIdentity(
                        registrationId: registrationId, deviceAuthentication: authentication,
                        tokenExpiry: token.expiryDate))
            }
            for group in groups where group.attestation.type == .symmetricKey {
                let derived = group.attestation.keys.compactMap {
                    ProvisioningProtocol.derivedDeviceKey(groupKey: $0, registrationId: registrationId)
                }
                guard derived.contains(where: token.isSigned(withKey:)) else { continue }
                let authentication = IdentityAuthentication(
                    type: .sas, primaryKey: derived.first, secondaryKey: derived.count > 1 ? derived[1] : nil)
                return .success(
                    ProvisioningIdentity(
                        registrationId: registrationId, enrollmentGroupId: group.id,
                        deviceAuthentication: authentication, tokenExpiry: token.expiryDate))
            }
            return .failure(.notAuthorized)
        }
        guard let der = credentials.clientCertificateDER, let leaf = try? Certificate(derEncoded: der),
            CertificateInspection.commonName(ofDER: der) == registrationId
        else { return .failure(.notAuthorized) }
        if let individual {
            guard individual.attestation.type == .x509, individual.attestation.certificates.contains(der) else {
                return .failure(.notAuthorized)
            }
            let thumbprints = individual.attestation.certificates.map { CertificateThumbprint.sha256($0) }
            let authentication = IdentityAuthentication(
                type: .selfSigned, primaryThumbprint: thumbprints.first,
                secondaryThumbprint: thumbprints.count > 1 ? thumbprints[1] : nil)
            return .success(ProvisioningIdentity(registrationId: registrationId, deviceAuthentication: authentication))
        }
        for group in groups where group.attestation.type == .x509 {
            let signers = group.attestation.certificates.compactMap { try? Certificate(derEncoded: $0) }
            guard
                signers.contains(where: {
                    $0.subject == leaf.issuer && $0.publicKey.isValidSignature(leaf.signature, for: leaf)
                })
            else { continue }
            let authentication = IdentityAuthentication(
                type: .selfSigned, primaryThumbprint: CertificateThumbprint.sha256(der))
            return .success(
                ProvisioningIdentity(
                    registrationId: registrationId, enrollmentGroupId: group.id, deviceAuthentication: authentication))
        }
        return .failure(.notAuthorized)
    }

    /// The enrollment that admitted `identity`, if it still exists.
    func enrollment(for identity: ProvisioningIdentity) -> Enrollment? {
        state.withLockedValue { state in
            if let group = identity.enrollmentGroupId { return state.groups[group] }
            return state.enrollments[identity.registrationId]
        }
    }

    /// Keeps a finished operation for the device's polls; returns its id.
    func recordOperation(registrationId: String, status: String, registration: RegistrationRecord?) -> String {
        let hex = String(format: "%016llx", UInt64.random(in: 0...UInt64.max))
        let operationId = "4.\(hex).\(UUID().uuidString.lowercased())"
        let answer = ProvisioningJSON.operationStatus(
            operationId: operationId, status: status, registration: registration)
        state.withLockedValue { state in
            state.operations[operationId] = Operation(registrationId: registrationId, answer: answer)
            state.operationOrder.append(operationId)
            let excess = state.operationOrder.count - Self.maximumOperations
            if excess > 0 {
                for forgotten in state.operationOrder.prefix(excess) { state.operations[forgotten] = nil }
                state.operationOrder.removeFirst(excess)
            }
        }
        return operationId
    }

    /// The status of an operation of `registrationId`; nil for an unknown id or another device's.
    func operation(_ operationId: String, of registrationId: String) -> JSONValue? {
        state.withLockedValue { state in
            guard let operation = state.operations[operationId], operation.registrationId == registrationId else {
                return nil
            }
            return operation.answer
        }
    }

    // MARK: Service API

    /// Checks the credential of a service-API request: a SAS token of the service policy for
    /// this host.
    func authorizeProvisioningService(_ authorization: String?, now: Date = Date()) throws(ProvisioningFailure) {
        guard let header = authorization else {
            throw .unauthorized("missing Authorization header: send a SAS token of the '\(Self.policyName)' policy")
        }
        guard let token = try? SASToken(parsing: header) else {
            throw .unauthorized("the Authorization header is not a SAS token")
        }
        let resource = token.resourceURI.lowercased()
        guard resource == hostName.lowercased() || resource.hasPrefix(hostName.lowercased() + "/") else {
            throw .unauthorized("the token is for '\(token.resourceURI.prefix(128))', not for \(hostName)")
        }
        guard token.keyName == Self.policyName else {
            throw .unauthorized("the token is not signed by the '\(Self.policyName)' policy")
        }
        guard !token.isExpired(at: now) else { throw .unauthorized("the token expired") }
        guard token.isSigned(withKey: policyKey) else { throw .unauthorized("the token's signature is not valid") }
    }

    /// Creates or replaces an enrollment (or group): no `If-Match` (nor body etag) creates or
    /// replaces, `*` or the current etag replaces, another etag is refused (412).
    func put(_ request: ProvisioningJSON.EnrollmentRequest, ifMatch: String?, now: Date = Date())
        throws(ProvisioningFailure) -> Enrollment
    {
        let wanted = ETag.requested(ifMatch) ?? request.etag.flatMap { ETag.requested($0) }
        var enrollment = request.enrollment
        return try state.withLock { state throws(ProvisioningFailure) -> Enrollment in
            let existing = enrollment.isGroup ? state.groups[enrollment.id] : state.enrollments[enrollment.id]
            if let existing {
                if let wanted, wanted != "*", wanted != existing.etag {
                    throw .preconditionFailed("the enrollment's etag is \(existing.etag)")
                }
                enrollment.created = existing.created
                enrollment.etagCounter = existing.etagCounter + 1
                enrollment.lastUpdated = now
            } else if let wanted, wanted != "*" {
                throw .notFound("no enrollment '\(enrollment.id)' to update")
            }
            if enrollment.isGroup {
                state.groups[enrollment.id] = enrollment
            } else {
                state.enrollments[enrollment.id] = enrollment
            }
            return enrollment
        }
    }

    func get(_ id: String, isGroup: Bool) throws(ProvisioningFailure) -> Enrollment {
        guard let found = state.withLockedValue({ isGroup ? $0.groups[id] : $0.enrollments[id] }) else {
            throw .notFound(isGroup ? "no enrollment group '\(id)'" : "no enrollment '\(id)'")
        }
        return found
    }

    func delete(_ id: String, isGroup: Bool, ifMatch: String?) throws(ProvisioningFailure) {
        let wanted = ETag.requested(ifMatch)
        try state.withLock { state throws(ProvisioningFailure) in
            guard let existing = isGroup ? state.groups[id] : state.enrollments[id] else {
                throw .notFound(isGroup ? "no enrollment group '\(id)'" : "no enrollment '\(id)'")
            }
            if let wanted, wanted != "*", wanted != existing.etag {
                throw .preconditionFailed("the enrollment's etag is \(existing.etag)")
            }
            if isGroup { state.groups[id] = nil } else { state.enrollments[id] = nil }
        }
    }

    func all(groups: Bool) -> [Enrollment] {
        state.withLockedValue { state in
            (groups ? Array(state.groups.values) : Array(state.enrollments.values)).sorted { $0.id < $1.id }
        }
    }

    func registration(_ registrationId: String) -> RegistrationRecord? {
        state.withLockedValue { $0.registrations[registrationId] }
    }

    func registrations(ofGroup groupId: String? = nil) -> [RegistrationRecord] {
        state.withLockedValue { state in
            state.registrations.values.filter { groupId == nil || $0.enrollmentGroupId == groupId }.sorted {
                $0.registrationId < $1.registrationId
            }
        }
    }

    func deleteRegistration(_ registrationId: String, ifMatch: String?) throws(ProvisioningFailure) {
        let wanted = ETag.requested(ifMatch)
        try state.withLock { state throws(ProvisioningFailure) in
            guard let existing = state.registrations[registrationId] else {
                throw .notFound("no registration '\(registrationId)'")
            }
            if let wanted, wanted != "*", wanted != existing.etag {
                throw .preconditionFailed("the registration's etag is \(existing.etag)")
            }
            state.registrations[registrationId] = nil
        }
    }
}
