public import IoTHubProtocol

/// Where a file upload goes: the answer of the hub's `POST /devices/{id}/files`.
public struct StorageInfo: Sendable, Hashable, Codable {
    public var correlationId: String
    public var hostName: String
    public var containerName: String
    public var blobName: String
    public var sasToken: String

    public init(correlationId: String, hostName: String, containerName: String, blobName: String, sasToken: String) {
        self.correlationId = correlationId
        self.hostName = hostName
        self.containerName = containerName
        self.blobName = blobName
        self.sasToken = sasToken
    }

    /// `https://{hostName}/{containerName}/{blobName}{sasToken}`: where to PUT the blob.
    public var blobURL: String {
        let path = blobName.split(separator: "/", omittingEmptySubsequences: false).map {
            PercentEncoding.encode(String($0))
        }.joined(separator: "/")
        return "https://\(hostName)/\(containerName)/\(path)\(sasToken)"
    }
}

/// A finished one-call upload (``IoTHubDeviceClient/uploadBlob(named:length:contentType:body:)``).
public struct BlobUploadResult: Sendable, Hashable {
    /// Where the hub put the blob.
    public var storageInfo: StorageInfo

    /// The blob's URL without its SAS token.
    public var blobURLWithoutToken: String {
        String(storageInfo.blobURL.dropLast(storageInfo.sasToken.count))
    }
}

/// How a one-call upload failed after the hub had given it a place: the error, the upload's
/// correlation id (to send the notification again) and blob storage's status when it answered.
public struct BlobUploadFailure: Error, Sendable {
    public var error: IoTHubError
    public var correlationId: String?
    /// Blob storage's HTTP status, when storage itself refused the upload.
    public var upstreamStatus: Int?
}
