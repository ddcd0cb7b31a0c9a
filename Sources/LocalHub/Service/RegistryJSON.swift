import Foundation
import IoTHubProtocol

/// IoT Hub's JSON shapes of the service API (api-version 2021-04-12), built from and read into
/// the hub's records.
enum RegistryJSON {
    static func timestamp(_ date: Date?) -> JSONValue {
        guard let date else { return "0001-01-01T00:00:00Z" }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return .string(formatter.string(from: date))
    }

    /// A device or module identity.
    static func identity(_ record: IdentityRecord, connected: Bool) -> JSONValue {
        var members: [String: JSONValue] = [
            "deviceId": .string(record.key.deviceId),
            "generationId": .string(record.generationId),
            "etag": .string(record.etag),
            "connectionState": connected ? "Connected" : "Disconnected",
            "connectionStateUpdatedTime": timestamp(record.connectionStateUpdatedTime),
            "lastActivityTime": timestamp(record.lastActivityTime),
            "cloudToDeviceMessageCount": .integer(Int64(record.cloudToDevice.count)),
            "authentication": authentication(record.authentication),
        ]
        if let moduleId = record.key.moduleId {
            members["moduleId"] = .string(moduleId)
            members["managedBy"] = record.managedBy.map(JSONValue.string) ?? .null
        } else {
            members["status"] = .string(record.status)
            members["statusReason"] = record.statusReason.map(JSONValue.string) ?? .null
            members["statusUpdatedTime"] = timestamp(record.statusUpdatedTime)
            members["capabilities"] = ["iotEdge": .bool(record.iotEdge)]
        }
        return .object(members)
    }

    static func authentication(_ authentication: IdentityAuthentication) -> JSONValue {
        [
            "type": .string(authentication.type.rawValue),
            "symmetricKey": [
                "primaryKey": authentication.primaryKey.map(JSONValue.string) ?? .null,
                "secondaryKey": authentication.secondaryKey.map(JSONValue.string) ?? .null,
            ],
            "x509Thumbprint": [
                "primaryThumbprint": authentication.primaryThumbprint.map(JSONValue.string) ?? .null,
                "secondaryThumbprint": authentication.secondaryThumbprint.map(JSONValue.string) ?? .null,
            ],
        ]
    }

    /// Reads the `authentication` member of a PUT body; generates keys for SAS identities that
    /// came without them.
    static func readAuthentication(_ json: JSONValue?) throws(ServiceError) -> IdentityAuthentication {
        guard let json, json != .null else { return .newSymmetricKeys() }
        guard let members = json.objectValue else { throw .badRequest("authentication must be an object") }
        let typeName = members["type"].flatMap(stringValue) ?? "sas"
        guard let type = IdentityAuthentication.Kind(rawValue: typeName) else {
            throw .badRequest("unknown authentication type '\(typeName)'")
        }
        let keys = members["symmetricKey"]?.objectValue
        let thumbprints = members["x509Thumbprint"]?.objectValue
        var result = IdentityAuthentication(
            type: type,
            primaryKey: keys?["primaryKey"].flatMap(stringValue),
            secondaryKey: keys?["secondaryKey"].flatMap(stringValue),
            primaryThumbprint: thumbprints?["primaryThumbprint"].flatMap(stringValue),
            secondaryThumbprint: thumbprints?["secondaryThumbprint"].flatMap(stringValue))
        switch type {
        case .sas:
            for key in [result.primaryKey, result.secondaryKey].compactMap({ $0 }) where Data(base64Encoded: key) == nil
            {
                throw .badRequest("the symmetric key '\(key.prefix(4))…' is not base64")
            }
            result.primaryKey = result.primaryKey ?? IdentityAuthentication.randomKey()
            result.secondaryKey = result.secondaryKey ?? IdentityAuthentication.randomKey()
        case .selfSigned:
            guard result.primaryThumbprint != nil || result.secondaryThumbprint != nil else {
                throw .badRequest("a selfSigned identity needs a primary or secondary thumbprint")
            }
            result.primaryKey = nil
            result.secondaryKey = nil
        case .certificateAuthority, .none:
            result.primaryKey = nil
            result.secondaryKey = nil
        }
        return result
    }

    /// A device or module twin as the service sees it.
    static func twin(_ record: IdentityRecord, connected: Bool) -> JSONValue {
        var members: [String: JSONValue] = [
            "deviceId": .string(record.key.deviceId),
            "modelId": .string(record.modelId ?? ""),
            "etag": .string(record.twinEtag),
            "deviceEtag": .string(record.etag),
            "version": .integer(Int64(record.twinVersion)),
            "status": .string(record.status),
            "statusUpdateTime": timestamp(record.statusUpdatedTime),
            "connectionState": connected ? "Connected" : "Disconnected",
            "lastActivityTime": timestamp(record.lastActivityTime),
            "cloudToDeviceMessageCount": .integer(Int64(record.cloudToDevice.count)),
            "authenticationType": .string(record.authentication.type.rawValue),
            "x509Thumbprint": authentication(record.authentication)["x509Thumbprint"] ?? .null,
            "tags": .object(record.tags),
            "properties": ["desired": record.desired.json, "reported": record.reported.json],
            "capabilities": ["iotEdge": .bool(record.iotEdge)],
        ]
        if let moduleId = record.key.moduleId { members["moduleId"] = .string(moduleId) }
        return .object(members)
    }

    static func stringValue(_ json: JSONValue) -> String? {
        if case .string(let text) = json { return text }
        return nil
    }
}
