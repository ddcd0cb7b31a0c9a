import AsyncPrimitives
import Foundation
import IoTHubProtocol

extension Hub {
    /// The container file uploads go to, as IoT Hub's associated storage account would name it.
    static let fileUploadContainer = "fileuploads"
    /// How long the blob SAS of a file upload is valid.
    static let fileUploadSASLifetime: TimeInterval = 3600

    /// Starts a file upload: `POST /devices/{id}/files`. The blob lands under `{deviceId}/{blobName}`.
    func startFileUpload(for key: IdentityKey, blobName: String, now: Date = Date()) throws(ServiceError) -> (
        correlationId: String, hostName: String, containerName: String, blobName: String, sasToken: String
    ) {
        guard !blobName.isEmpty, blobName.utf8.count <= 1024, !blobName.hasPrefix("/") else {
            throw .badRequest("blobName must be 1 to 1024 characters and not start with '/'")
        }
        let correlationId = UUID().uuidString.lowercased()
        let fullName = "\(key.deviceId)/\(blobName)"
        let expiry = now.addingTimeInterval(Self.fileUploadSASLifetime)
        try state.withLock { state throws(ServiceError) in
            guard state.identities[key] != nil else { throw .notFound(key) }
            if state.faults.takeThrottle() { throw .throttled }
            // Uploads a device never reported on are forgotten when their SAS has expired.
            state.fileUploads = state.fileUploads.filter {
                now.timeIntervalSince($0.value.created) < Self.fileUploadSASLifetime
            }
            state.fileUploads[correlationId] = PendingFileUpload(
                key: key, containerName: Self.fileUploadContainer, blobName: fullName, created: now)
        }
        let sas = blobs.signature(container: Self.fileUploadContainer, blob: fullName, expiry: expiry)
        return (correlationId, blobHost.withLockedValue { $0 }, Self.fileUploadContainer, fullName, sas)
    }

    /// Completes a file upload: `POST /devices/{id}/files/notifications`.
    func completeFileUpload(
        for key: IdentityKey, correlationId: String, isSuccess: Bool, statusCode: Int, statusDescription: String,
        now: Date = Date()
    ) throws(ServiceError) {
        let upload = try state.withLock { state throws(ServiceError) -> PendingFileUpload in
            if state.faults.takeThrottle() { throw .throttled }
            guard let upload = state.fileUploads[correlationId], upload.key == key else {
                throw .badRequest("unknown correlationId '\(correlationId)'")
            }
            state.fileUploads[correlationId] = nil
            return upload
        }
        let host = blobHost.withLockedValue { $0 }
        let uri =
            "https://\(host)/\(upload.containerName)/\(upload.blobName.split(separator: "/").map { PercentEncoding.encode(String($0)) }.joined(separator: "/"))"
        fileUploadNotifications.append(
            FileUploadNotification(
                deviceId: key.deviceId, blobName: upload.blobName, blobUri: uri, correlationId: correlationId,
                isSuccess: isSuccess, statusCode: statusCode, statusDescription: statusDescription, enqueuedTime: now),
            size: 256 + upload.blobName.utf8.count + statusDescription.utf8.count)
    }
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
