import Foundation
import IoTHubProtocol

/// An answer of the provisioning service to a device's request.
struct ProvisioningReply: Sendable, Equatable {
    var status: Int
    var retryAfter: Int?
    var body: JSONValue

    static func failure(_ failure: ProvisioningFailure) -> ProvisioningReply {
        ProvisioningReply(status: failure.status, retryAfter: nil, body: failure.json())
    }

    /// 429 with `retry-after`, when the hub's fault injection throttles the request.
    static var throttled: ProvisioningReply {
        ProvisioningReply(
            status: 429, retryAfter: 1,
            body: [
                "errorCode": 429001, "trackingId": .string(UUID().uuidString.lowercased()),
                "message": "Throttled by the local hub's fault injection",
                "timestampUtc": ProvisioningJSON.timestamp(Date()),
            ])
    }
}

extension Hub {
    /// Registers a device that authenticated as `identity`, like DPS: the enrollment decides
    /// (disabled → status `disabled`, no device); otherwise the device is created in (or
    /// updated in) this hub's registry with the enrollment's initial twin and the device's
    /// credentials, and the registration state is recorded and counted. The answer is always
    /// `202 assigning` with an operation id that the device then polls
    /// (``provisioningOperationStatus(_:operationId:)``), as the real service answers. Fault
    /// injection's throttling answers 429 with `retry-after` instead (nothing registered).
    ///
    /// The device's custom payload is returned in `registrationState.payload` whenever it sent
    /// one, as if a custom allocation function echoed it (the real service returns a payload
    /// only with custom allocation).
    func register(
        _ identity: ProvisioningIdentity, request: ProvisioningProtocol.RegistrationRequest, now: Date = Date()
    ) -> ProvisioningReply {
        if state.withLockedValue({ $0.faults.takeThrottle() }) { return .throttled }
        if let requested = request.registrationId, requested != identity.registrationId {
            return .failure(
                .badRequest(
                    "registrationId '\(requested.prefix(128))' in the request is not the registration id '\(identity.registrationId)' the device connected with"
                ))
        }
        guard let enrollment = provisioning.enrollment(for: identity) else {
            return .failure(.unauthorized("the enrollment of '\(identity.registrationId)' no longer exists"))
        }
        let previous = provisioning.registration(identity.registrationId)
        var record = RegistrationRecord(
            registrationId: identity.registrationId, enrollmentGroupId: identity.enrollmentGroupId, status: "assigned",
            created: previous?.created ?? now, lastUpdated: now, etagCounter: (previous?.etagCounter ?? 0) + 1,
            registrationCount: (previous?.registrationCount ?? 0) + 1)
        record.payload = request.payload
        if !enrollment.isEnabled {
            record.status = "disabled"
            record.errorMessage =
                "the enrollment \(enrollment.isGroup ? "group '\(enrollment.id)'" : "'\(enrollment.id)'") is disabled"
        } else {
            let deviceId =
                enrollment.isGroup ? identity.registrationId : (enrollment.deviceId ?? identity.registrationId)
            let firstAssignment = previous?.status != "assigned"
            let substatus: String
            if firstAssignment {
                substatus = "initialAssignment"
            } else if enrollment.reprovisionPolicy.updateHubAssignment {
                substatus = "reprovisionedToInitialAssignment"
            } else {
                substatus = previous?.substatus ?? "initialAssignment"
            }
            let resetTwin =
                !firstAssignment && enrollment.reprovisionPolicy.updateHubAssignment
                && !enrollment.reprovisionPolicy.migrateDeviceData
            do {
                try provisionDevice(
                    deviceId, identity: identity, enrollment: enrollment, resetTwin: resetTwin, now: now)
                record.deviceId = deviceId
                record.assignedHub = hostName
                record.substatus = substatus
            } catch {
                record.status = "failed"
                record.errorCode = error.iotHubCode.0
                record.errorMessage = "the hub refused the device: \(error.message)"
            }
        }
        // Counted against the record as it is now: another registration of the same device may
        // have finished meanwhile.
        record = provisioning.state.withLockedValue { state in
            let current = state.registrations[identity.registrationId]
            record.created = current?.created ?? now
            record.etagCounter = (current?.etagCounter ?? 0) + 1
            record.registrationCount = (current?.registrationCount ?? 0) + 1
            state.registrations[identity.registrationId] = record
            return record
        }
        stateChanged()
        logger.info(
            "device registered with the provisioning service",
            metadata: [
                "registrationId": "\(identity.registrationId)", "status": "\(record.status)",
                "deviceId": "\(record.deviceId ?? "-")",
            ])
        let operationId = provisioning.recordOperation(
            registrationId: identity.registrationId, status: record.status, registration: record)
        return ProvisioningReply(
            status: 202, retryAfter: ProvisioningService.retryAfterSeconds,
            body: ProvisioningJSON.operationStatus(operationId: operationId, status: "assigning", registration: nil))
    }

    /// The answer to a device's poll: the finished operation (200), or 404 for an operation
    /// id this device does not have.
    func provisioningOperationStatus(_ identity: ProvisioningIdentity, operationId: String) -> ProvisioningReply {
        if state.withLockedValue({ $0.faults.takeThrottle() }) { return .throttled }
        guard let answer = provisioning.operation(operationId, of: identity.registrationId) else {
            return .failure(
                .notFound("no registration operation '\(operationId.prefix(128))' for '\(identity.registrationId)'"))
        }
        return ProvisioningReply(status: 200, retryAfter: nil, body: answer)
    }

    /// Creates the device a registration assigns to this hub, or updates it: its credentials
    /// become the enrollment's (a change ends its connection, like any change of keys), and
    /// the twin gets the enrollment's initial twin when the device is created or `resetTwin`.
    private func provisionDevice(
        _ deviceId: String, identity: ProvisioningIdentity, enrollment: Enrollment, resetTwin: Bool, now: Date
    ) throws(ServiceError) {
        try Self.validateIdentifier(deviceId, name: "deviceId")
        let key = IdentityKey(deviceId: deviceId)
        let disconnect = state.withLockedValue { state -> DeviceConnection? in
            var record: IdentityRecord
            let created: Bool
            if let existing = state.identities[key] {
                record = existing
                created = false
                record.etagCounter += 1
            } else {
                record = IdentityRecord(key: key, authentication: identity.deviceAuthentication, now: now)
                created = true
            }
            let credentialsChanged = !created && record.authentication != identity.deviceAuthentication
            record.authentication = identity.deviceAuthentication
            record.iotEdge = enrollment.iotEdge
            if created || resetTwin {
                var desired = TwinProperties(
                    properties: enrollment.initialDesired ?? [:], version: created ? 1 : record.desired.version + 1)
                desired.properties = desired.properties.filter { !$0.key.hasPrefix("$") }
                record.desired = desired
                record.tags = enrollment.initialTags ?? [:]
                if !created { record.twinVersion += 1 }
            }
            state.identities[key] = record
            if created { route(.deviceLifecycleEvents, in: state) { .lifecycle(record, created: true, at: now) } }
            return credentialsChanged ? state.sessions[key]?.connection : nil
        }
        disconnect?.close()
        stateChanged()
    }
}
