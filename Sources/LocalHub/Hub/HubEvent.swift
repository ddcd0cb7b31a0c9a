import Foundation
import IoTHubProtocol

/// A notification the hub emits about a change it made (not a message a device sent), shaped
/// as IoT Hub routes it to the built-in events endpoint: application properties `hubName`,
/// `deviceId`, `moduleId` (modules), `operationTimestamp`, `iothub-message-schema` and
/// `opType`, and a JSON body.
struct HubEvent: Sendable {
    var source: MessageSource
    var key: IdentityKey
    /// `iothub-message-schema`.
    var schema: String
    /// `opType`.
    var operation: String
    var body: JSONValue
    var time: Date

    /// A twin change notification (`twinChangeNotification`).
    static func twinChange(_ key: IdentityKey, operation: TwinChangeOperation, body: JSONValue, at time: Date)
        -> HubEvent
    {
        HubEvent(
            source: .twinChangeEvents, key: key, schema: "twinChangeNotification", operation: operation.rawValue,
            body: body, time: time)
    }

    /// A device or module was created or deleted (`deviceLifecycleNotification`); the body is
    /// its twin.
    static func lifecycle(_ record: IdentityRecord, created: Bool, at time: Date) -> HubEvent {
        HubEvent(
            source: .deviceLifecycleEvents, key: record.key, schema: "deviceLifecycleNotification",
            operation: created ? "createDeviceIdentity" : "deleteDeviceIdentity",
            body: twinDocument(record, withTags: false), time: time)
    }

    /// A device or module connected or disconnected (`deviceConnectionStateNotification`); the
    /// body carries the sequence number that orders these events.
    static func connectionState(_ key: IdentityKey, connected: Bool, sequenceNumber: String, at time: Date) -> HubEvent
    {
        HubEvent(
            source: .deviceConnectionStateEvents, key: key, schema: "deviceConnectionStateNotification",
            operation: connected ? "deviceConnected" : "deviceDisconnected",
            body: ["sequenceNumber": .string(sequenceNumber)], time: time)
    }

    /// The twin as lifecycle events and replace notifications carry it: ids, etag, version,
    /// tags and properties. LocalHub keeps no `$metadata`, so there is none.
    static func twinDocument(_ record: IdentityRecord, withTags: Bool) -> JSONValue {
        var members: [String: JSONValue] = [
            "deviceId": .string(record.key.deviceId),
            "etag": .string(record.twinEtag),
            "version": .integer(Int64(record.twinVersion)),
            "properties": ["desired": record.desired.json, "reported": record.reported.json],
        ]
        if let moduleId = record.key.moduleId { members["moduleId"] = .string(moduleId) }
        if withTags || !record.tags.isEmpty { members["tags"] = .object(record.tags) }
        return .object(members)
    }

    /// The record the built-in endpoint keeps of this event, with IoT Hub's system properties
    /// (`application/json`, `utf-8`, a unique correlation id, the hub's name as user id).
    func record(hubName: String) -> TelemetryRecord {
        var message = Message(payload: body.encoded())
        message.contentType = "application/json"
        message.contentEncoding = "utf-8"
        message.correlationId = UUID().uuidString.lowercased()
        message.userId = hubName
        message.properties = [
            "hubName": hubName, "deviceId": key.deviceId, "operationTimestamp": Self.timestamp(time),
            "iothub-message-schema": schema, "opType": operation,
        ]
        if let moduleId = key.moduleId { message.properties["moduleId"] = moduleId }
        return TelemetryRecord(
            enqueuedTime: time, deviceId: key.deviceId, moduleId: key.moduleId, message: message, rawProperties: "",
            source: source)
    }

    /// ISO 8601 in UTC with fractional seconds, as `operationTimestamp` is written.
    static func timestamp(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }
}

/// The `opType` of a twin change notification.
enum TwinChangeOperation: String, Sendable {
    /// A patch: a device's reported properties, or the service's desired properties or tags.
    case updateTwin
    /// The service replaced the twin (`PUT`).
    case replaceTwin
}
