import AsyncPrimitives
import Foundation
import IoTHubProtocol

extension Hub {
    /// Creates or updates an identity from a service-API PUT body, with IoT Hub's etag rules:
    /// no `If-Match` creates (409 if it exists), `If-Match: *` or the current etag updates
    /// (412 on another etag). A creation emits a lifecycle event (`createDeviceIdentity`).
    func putIdentity(_ key: IdentityKey, body: JSONValue, ifMatch: String?, now: Date = Date()) throws(ServiceError)
        -> IdentityRecord
    {
        guard let members = body.objectValue else { throw .badRequest("the body must be a JSON object") }
        if let bodyId = members["deviceId"].flatMap(RegistryJSON.stringValue), bodyId != key.deviceId {
            throw .badRequest("deviceId '\(bodyId)' in the body does not match '\(key.deviceId)' in the path")
        }
        if let moduleId = key.moduleId, let bodyModule = members["moduleId"].flatMap(RegistryJSON.stringValue),
            bodyModule != moduleId
        {
            throw .badRequest("moduleId '\(bodyModule)' in the body does not match '\(moduleId)' in the path")
        }
        try Self.validateIdentifier(key.deviceId, name: "deviceId")
        if let moduleId = key.moduleId { try Self.validateIdentifier(moduleId, name: "moduleId") }
        // An update without `authentication` keeps the identity's keys; only a create generates them.
        let authentication: IdentityAuthentication? =
            members["authentication"] == nil && identity(key) != nil
            ? nil : try RegistryJSON.readAuthentication(members["authentication"])
        let status = members["status"].flatMap(RegistryJSON.stringValue) ?? "enabled"
        guard status == "enabled" || status == "disabled" else {
            throw .badRequest("status must be 'enabled' or 'disabled'")
        }
        let etagWanted = ETag.requested(ifMatch)

        let (record, disconnect) = try state.withLock {
            state throws(ServiceError) -> (IdentityRecord, DeviceConnection?) in
            if key.moduleId != nil, state.identities[IdentityKey(deviceId: key.deviceId)] == nil {
                throw .notFound(IdentityKey(deviceId: key.deviceId))
            }
            var record: IdentityRecord
            if let existing = state.identities[key] {
                guard let etagWanted else {
                    throw key.moduleId == nil
                        ? .conflict("\(key) already exists") : .moduleConflict("\(key) already exists")
                }
                guard etagWanted == "*" || etagWanted == existing.etag else {
                    throw .preconditionFailed("the identity's etag is \(existing.etag)")
                }
                record = existing
                if record.status != status { record.statusUpdatedTime = now }
                record.authentication = authentication ?? existing.authentication
                record.etagCounter += 1
            } else {
                if let etagWanted, etagWanted != "*" { throw .notFound(key) }
                record = IdentityRecord(key: key, authentication: authentication ?? .newSymmetricKeys(), now: now)
            }
            record.status = status
            record.statusReason = members["statusReason"].flatMap(RegistryJSON.stringValue)
            record.managedBy = members["managedBy"].flatMap(RegistryJSON.stringValue)
            if case .bool(let edge)? = members["capabilities"]?["iotEdge"] { record.iotEdge = edge }
            let credentialsChanged =
                state.identities[key].map { $0.authentication != record.authentication || $0.status != status } ?? false
            let created = state.identities[key] == nil
            state.identities[key] = record
            if created { route(.deviceLifecycleEvents, in: state) { .lifecycle(record, created: true, at: now) } }
            return (record, credentialsChanged ? state.sessions[key]?.connection : nil)
        }
        // Like IoT Hub, new keys or a disabled identity end the current connection.
        disconnect?.close()
        stateChanged()
        return record
    }

    /// Registers a SAS device if it does not exist yet; returns its record.
    func ensureDevice(_ deviceId: String) throws(ServiceError) -> IdentityRecord {
        let key = IdentityKey(deviceId: deviceId)
        if let record = identity(key) { return record }
        return try putIdentity(key, body: ["deviceId": .string(deviceId)], ifMatch: nil)
    }

    func identity(_ key: IdentityKey) -> IdentityRecord? {
        state.withLockedValue { $0.identities[key] }
    }

    /// Identities of devices (modules excluded), or the modules of one device.
    func identities(modulesOf deviceId: String? = nil) -> [IdentityRecord] {
        state.withLockedValue { state in
            state.identities.values
                .filter {
                    deviceId == nil ? $0.key.moduleId == nil : ($0.key.deviceId == deviceId && $0.key.moduleId != nil)
                }
                .sorted { $0.key.clientId < $1.key.clientId }
        }
    }

    /// Deletes an identity (and a device's modules); closes their connections. Emits, for each
    /// identity deleted (modules first), a disconnection event if it was connected and a
    /// lifecycle event (`deleteDeviceIdentity`).
    func deleteIdentity(_ key: IdentityKey, ifMatch: String?, now: Date = Date()) throws(ServiceError) {
        let etagWanted = ETag.requested(ifMatch)
        let connections = try state.withLock { state throws(ServiceError) -> [DeviceConnection] in
            guard let existing = state.identities[key] else { throw .notFound(key) }
            if let etagWanted, etagWanted != "*", etagWanted != existing.etag {
                throw .preconditionFailed("the identity's etag is \(existing.etag)")
            }
            let doomed = state.identities.keys
                .filter { $0 == key || (key.moduleId == nil && $0.deviceId == key.deviceId) }
                .sorted { ($0.moduleId == nil ? 1 : 0, $0.clientId) < ($1.moduleId == nil ? 1 : 0, $1.clientId) }
            var connections: [DeviceConnection] = []
            for doomedKey in doomed {
                guard let record = state.identities.removeValue(forKey: doomedKey) else { continue }
                if let connection = state.sessions.removeValue(forKey: doomedKey)?.connection {
                    connections.append(connection)
                    routeConnectionState(of: doomedKey, connected: false, at: now, in: &state)
                }
                route(.deviceLifecycleEvents, in: state) { .lifecycle(record, created: false, at: now) }
            }
            return connections
        }
        connections.forEach { $0.close() }
        stateChanged()
    }

    /// IoT Hub's rule for device and module ids: up to 128 ASCII letters, digits and `-.+%_#*?!(),=@$'`.
    static func validateIdentifier(_ id: String, name: String) throws(ServiceError) {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.+%_#*?!(),=@$'")
        guard !id.isEmpty, id.count <= 128, id.allSatisfy(allowed.contains) else {
            throw .badRequest("\(name) '\(id)' is invalid: use up to 128 letters, digits or -.+%_#*?!(),=@$'")
        }
    }
}
