import Foundation
import IoTHubProtocol
import X509

/// The JSON of the provisioning service (api-version 2021-10-01): enrollments, enrollment
/// groups and registration states as the service SDK sends and reads them, and the operation
/// status a device polls.
enum ProvisioningJSON {
    static let allocationPolicies: Set<String> = ["hashed", "geoLatency", "static", "custom"]

    static func timestamp(_ date: Date) -> JSONValue {
        RegistryJSON.timestamp(date)
    }

    // MARK: Reading

    /// What a PUT body asks for; the service fills in etag and dates.
    struct EnrollmentRequest: Sendable {
        var enrollment: Enrollment
        /// The `etag` member of the body, if any (an `If-Match` header wins over it).
        var etag: String?
    }

    /// Reads an individual enrollment (`isGroup` false) or an enrollment group from a PUT body.
    /// - Parameters:
    ///   - id: the id in the path, which the body's `registrationId`/`enrollmentGroupId` must match.
    ///   - hubHostName: LocalHub's host name, the only hub an enrollment may name.
    static func readEnrollment(_ body: JSONValue, id: String, isGroup: Bool, hubHostName: String, now: Date)
        throws(ProvisioningFailure) -> EnrollmentRequest
    {
        guard let members = body.objectValue else { throw .badRequest("the body must be a JSON object") }
        let idMember = isGroup ? "enrollmentGroupId" : "registrationId"
        if let bodyId = members[idMember], bodyId != .null {
            guard case .string(let text) = bodyId, text == id else {
                throw .badRequest("\(idMember) in the body does not match '\(id)' in the path")
            }
        }
        var deviceId: String?
        if !isGroup, let value = members["deviceId"], value != .null {
            guard case .string(let text) = value else { throw .badRequest("deviceId must be a string") }
            do {
                try Hub.validateIdentifier(text, name: "deviceId")
            } catch {
                throw .badRequest(error.message)
            }
            deviceId = text
        }
        let attestation = try readAttestation(members["attestation"], isGroup: isGroup)
        let status = try optionalString(members["provisioningStatus"], "provisioningStatus") ?? "enabled"
        guard status == "enabled" || status == "disabled" else {
            throw .badRequest("provisioningStatus must be 'enabled' or 'disabled'")
        }
        var policy = ReprovisionPolicy()
        if let value = members["reprovisionPolicy"], value != .null {
            guard let object = value.objectValue else { throw .badRequest("reprovisionPolicy must be an object") }
            policy.updateHubAssignment =
                try optionalBool(object["updateHubAssignment"], "reprovisionPolicy.updateHubAssignment") ?? true
            policy.migrateDeviceData =
                try optionalBool(object["migrateDeviceData"], "reprovisionPolicy.migrateDeviceData") ?? true
        }
        let allocation = try optionalString(members["allocationPolicy"], "allocationPolicy")
        if let allocation, !allocationPolicies.contains(allocation) {
            throw .badRequest("allocationPolicy must be one of hashed, geoLatency, static, custom")
        }
        var hubs: [String]?
        if let value = members["iotHubs"], value != .null {
            guard case .array(let items) = value else { throw .badRequest("iotHubs must be an array of host names") }
            hubs = try items.map { item throws(ProvisioningFailure) -> String in
                guard case .string(let name) = item else { throw .badRequest("iotHubs must be an array of host names") }
                return name
            }
        }
        let singleHub = try optionalString(members["iotHubHostName"], "iotHubHostName")
        for hub in (hubs ?? []) + [singleHub].compactMap({ $0 }) where hub.lowercased() != hubHostName.lowercased() {
            throw .badRequest(
                "the hub '\(hub)' is not linked to this provisioning service: LocalHub (\(hubHostName)) is its only linked hub"
            )
        }
        var tags: [String: JSONValue]?
        var desired: [String: JSONValue]?
        if let twin = members["initialTwin"], twin != .null {
            guard let object = twin.objectValue else { throw .badRequest("initialTwin must be an object") }
            if let value = object["tags"], value != .null {
                guard let tagMembers = value.objectValue else {
                    throw .badRequest("initialTwin.tags must be an object")
                }
                tags = tagMembers.filter { !$0.key.hasPrefix("$") }
            }
            if let properties = object["properties"], properties != .null {
                guard let propertyMembers = properties.objectValue else {
                    throw .badRequest("initialTwin.properties must be an object")
                }
                if let value = propertyMembers["desired"], value != .null {
                    guard let desiredMembers = value.objectValue else {
                        throw .badRequest("initialTwin.properties.desired must be an object")
                    }
                    desired = desiredMembers.filter { !$0.key.hasPrefix("$") }
                }
            }
            let size = JSONValue.object(["tags": .object(tags ?? [:]), "desired": .object(desired ?? [:])]).encoded()
                .count
            guard size <= Hub.twinSectionLimit else {
                throw .badRequest("initialTwin exceeds \(Hub.twinSectionLimit) bytes")
            }
        }
        var iotEdge = false
        if let capabilities = members["capabilities"], capabilities != .null {
            iotEdge = try optionalBool(capabilities["iotEdge"], "capabilities.iotEdge") ?? false
        }
        let etag = try optionalString(members["etag"], "etag")
        let enrollment = Enrollment(
            id: id, isGroup: isGroup, deviceId: deviceId, attestation: attestation, provisioningStatus: status,
            reprovisionPolicy: policy,
            allocationPolicy: allocation, iotHubs: hubs, iotHubHostName: singleHub, initialTags: tags,
            initialDesired: desired, iotEdge: iotEdge,
            customAllocationDefinition: members["customAllocationDefinition"].flatMap { $0 == .null ? nil : $0 },
            optionalDeviceInformation: members["optionalDeviceInformation"].flatMap { $0 == .null ? nil : $0 },
            etagCounter: 1, created: now, lastUpdated: now)
        return EnrollmentRequest(enrollment: enrollment, etag: etag)
    }

    private static func readAttestation(_ json: JSONValue?, isGroup: Bool) throws(ProvisioningFailure)
        -> ProvisioningAttestation
    {
        guard let json, let members = json.objectValue else {
            throw .badRequest("attestation is required (an object with a type)")
        }
        let type = try optionalString(members["type"], "attestation.type")
        switch type {
        case "symmetricKey":
            let keys = members["symmetricKey"]?.objectValue
            var primary = try optionalString(keys?["primaryKey"], "attestation.symmetricKey.primaryKey")
            var secondary = try optionalString(keys?["secondaryKey"], "attestation.symmetricKey.secondaryKey")
            for key in [primary, secondary].compactMap({ $0 }) {
                guard let bytes = Data(base64Encoded: key), (16...64).contains(bytes.count) else {
                    throw .badRequest("a symmetric key must be base64 of 16 to 64 bytes")
                }
            }
            primary = primary ?? IdentityAuthentication.randomKey()
            secondary = secondary ?? IdentityAuthentication.randomKey()
            return ProvisioningAttestation(type: .symmetricKey, primaryKey: primary, secondaryKey: secondary)
        case "x509":
            guard let x509 = members["x509"]?.objectValue else {
                throw .badRequest("attestation.x509 is required for x509 attestation")
            }
            if let references = x509["caReferences"], references != .null {
                throw .badRequest(
                    "caReferences (certificates uploaded to the service) are not supported by LocalHub: give signingCertificates"
                )
            }
            let member = isGroup ? "signingCertificates" : "clientCertificates"
            guard let certificates = x509[member]?.objectValue else {
                throw .badRequest("attestation.x509.\(member) is required")
            }
            var attestation = ProvisioningAttestation(type: .x509)
            for slot in ["primary", "secondary"] {
                guard let entry = certificates[slot], entry != .null else { continue }
                guard
                    let text = try optionalString(
                        entry["certificate"], "attestation.x509.\(member).\(slot).certificate")
                else {
                    throw .badRequest("attestation.x509.\(member).\(slot).certificate is required")
                }
                guard let der = certificateDER(from: text) else {
                    throw .badRequest(
                        "attestation.x509.\(member).\(slot).certificate is not a PEM or base64 DER X.509 certificate")
                }
                let encoded = Data(der).base64EncodedString()
                if slot == "primary" {
                    attestation.primaryCertificate = encoded
                } else {
                    attestation.secondaryCertificate = encoded
                }
            }
            guard attestation.primaryCertificate != nil else {
                throw .badRequest("attestation.x509.\(member).primary is required")
            }
            return attestation
        case nil:
            throw .badRequest("attestation.type is required")
        case let other?:
            throw .badRequest(
                "attestation type '\(other.prefix(32))' is not supported by LocalHub: use symmetricKey or x509")
        }
    }

    /// DER of a certificate given as PEM text or as base64 DER; nil if it is neither.
    static func certificateDER(from text: String) -> [UInt8]? {
        var body = Substring(text)
        if let begin = text.range(of: "-----BEGIN CERTIFICATE-----") {
            guard let end = text.range(of: "-----END CERTIFICATE-----", range: begin.upperBound..<text.endIndex) else {
                return nil
            }
            body = text[begin.upperBound..<end.lowerBound]
        }
        let compact = body.filter { !$0.isWhitespace }
        guard let data = Data(base64Encoded: String(compact)), (try? Certificate(derEncoded: Array(data))) != nil else {
            return nil
        }
        return Array(data)
    }

    private static func optionalString(_ value: JSONValue?, _ name: String) throws(ProvisioningFailure) -> String? {
        guard let value, value != .null else { return nil }
        guard case .string(let text) = value else { throw .badRequest("\(name) must be a string") }
        return text
    }

    private static func optionalBool(_ value: JSONValue?, _ name: String) throws(ProvisioningFailure) -> Bool? {
        guard let value, value != .null else { return nil }
        guard case .bool(let flag) = value else { throw .badRequest("\(name) must be true or false") }
        return flag
    }

    // MARK: Writing

    static func enrollment(_ enrollment: Enrollment, registration: RegistrationRecord?) -> JSONValue {
        var members: [String: JSONValue] = [
            "attestation": attestation(enrollment.attestation, isGroup: enrollment.isGroup),
            "capabilities": ["iotEdge": .bool(enrollment.iotEdge)],
            "etag": .string(enrollment.etag),
            "provisioningStatus": .string(enrollment.provisioningStatus),
            "reprovisionPolicy": [
                "updateHubAssignment": .bool(enrollment.reprovisionPolicy.updateHubAssignment),
                "migrateDeviceData": .bool(enrollment.reprovisionPolicy.migrateDeviceData),
            ],
            "createdDateTimeUtc": timestamp(enrollment.created),
            "lastUpdatedDateTimeUtc": timestamp(enrollment.lastUpdated),
            "allocationPolicy": .string(enrollment.allocationPolicy ?? "hashed"),
            "iotHubs": .array((enrollment.iotHubs ?? []).map(JSONValue.string)),
        ]
        if enrollment.isGroup {
            members["enrollmentGroupId"] = .string(enrollment.id)
        } else {
            members["registrationId"] = .string(enrollment.id)
            if let deviceId = enrollment.deviceId { members["deviceId"] = .string(deviceId) }
            if let registration { members["registrationState"] = registrationState(registration) }
        }
        if let host = enrollment.iotHubHostName { members["iotHubHostName"] = .string(host) }
        if enrollment.initialTags != nil || enrollment.initialDesired != nil {
            members["initialTwin"] = [
                "tags": .object(enrollment.initialTags ?? [:]),
                "properties": ["desired": .object(enrollment.initialDesired ?? [:])],
            ]
        }
        if let definition = enrollment.customAllocationDefinition { members["customAllocationDefinition"] = definition }
        if let information = enrollment.optionalDeviceInformation { members["optionalDeviceInformation"] = information }
        return .object(members)
    }

    static func attestation(_ attestation: ProvisioningAttestation, isGroup: Bool) -> JSONValue {
        switch attestation.type {
        case .symmetricKey:
            return [
                "type": "symmetricKey",
                "symmetricKey": [
                    "primaryKey": attestation.primaryKey.map(JSONValue.string) ?? .null,
                    "secondaryKey": attestation.secondaryKey.map(JSONValue.string) ?? .null,
                ],
            ]
        case .x509:
            var certificates: [String: JSONValue] = [:]
            for (slot, encoded) in [
                ("primary", attestation.primaryCertificate), ("secondary", attestation.secondaryCertificate),
            ] {
                guard let encoded, let der = Data(base64Encoded: encoded) else { continue }
                certificates[slot] = ["info": certificateInfo(Array(der))]
            }
            return [
                "type": "x509", "x509": [isGroup ? "signingCertificates" : "clientCertificates": .object(certificates)],
            ]
        }
    }

    /// DPS's summary of a certificate (the service does not return the certificate itself).
    static func certificateInfo(_ der: [UInt8]) -> JSONValue {
        guard let certificate = try? Certificate(derEncoded: der) else { return .null }
        return [
            "subjectName": .string(certificate.subject.description),
            "issuerName": .string(certificate.issuer.description),
            "sha1Thumbprint": .string(CertificateThumbprint.sha1(der)),
            "sha256Thumbprint": .string(CertificateThumbprint.sha256(der)),
            "serialNumber": .string(certificate.serialNumber.description),
            "notBeforeUtc": timestamp(certificate.notValidBefore),
            "notAfterUtc": timestamp(certificate.notValidAfter),
            "version": .integer(certificate.version == .v3 ? 3 : 1),
        ]
    }

    /// A device registration state, as the service API and the device's operation status show it.
    static func registrationState(_ record: RegistrationRecord) -> JSONValue {
        var members: [String: JSONValue] = [
            "registrationId": .string(record.registrationId),
            "createdDateTimeUtc": timestamp(record.created),
            "lastUpdatedDateTimeUtc": timestamp(record.lastUpdated),
            "status": .string(record.status),
            "etag": .string(record.etag),
        ]
        if let hub = record.assignedHub { members["assignedHub"] = .string(hub) }
        if let deviceId = record.deviceId { members["deviceId"] = .string(deviceId) }
        if let substatus = record.substatus { members["substatus"] = .string(substatus) }
        if let code = record.errorCode { members["errorCode"] = .integer(Int64(code)) }
        if let message = record.errorMessage { members["errorMessage"] = .string(message) }
        if let payload = record.payload { members["payload"] = payload }
        if let group = record.enrollmentGroupId { members["enrollmentGroupId"] = .string(group) }
        return .object(members)
    }

    /// The answer to a registration or an operation-status request.
    static func operationStatus(operationId: String, status: String, registration: RegistrationRecord?) -> JSONValue {
        var members: [String: JSONValue] = ["operationId": .string(operationId), "status": .string(status)]
        if let registration { members["registrationState"] = registrationState(registration) }
        return .object(members)
    }
}
