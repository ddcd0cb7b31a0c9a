import Foundation
import IoTHubProtocol

/// A device-to-cloud message as the hub received it.
struct TelemetryRecord: Sendable {
    var enqueuedTime: Date
    var deviceId: String
    var moduleId: String?
    var message: Message
    /// The property bag exactly as it was on the topic.
    var rawProperties: String
    /// The device sent it again (MQTT DUP flag): a redelivery after a lost acknowledgement.
    var redelivered: Bool = false
}

/// A file-upload completion a device reported.
struct FileUploadNotification: Sendable, Codable {
    var deviceId: String
    var blobName: String
    var blobUri: String
    var correlationId: String
    var isSuccess: Bool
    var statusCode: Int
    var statusDescription: String
    var enqueuedTime: Date
}

/// A file upload a device started: the storage it was given.
struct PendingFileUpload: Sendable {
    var key: IdentityKey
    var containerName: String
    var blobName: String
    var created: Date
}
