public import FoundationEssentials
public import IoTHubProtocol

// MARK: File upload

extension IoTHubDeviceClient {
    /// Asks the hub where to upload a file (the Python SDK's `get_storage_info_for_blob`). A name
    /// blob storage would not read as written (``BlobName/validate(_:)``) is refused first.
    public func storageInfo(forBlob blobName: String) async throws(IoTHubError) -> StorageInfo {
        try checkNotShutDown()
        return try await fileUpload.storageInfo(forBlob: blobName)
    }

    /// Tells the hub how an upload ended (the Python SDK's `notify_blob_upload_status`).
    public func notifyBlobUploadStatus(
        correlationId: String, isSuccess: Bool, statusCode: Int, statusDescription: String
    ) async throws(IoTHubError) {
        try checkNotShutDown()
        try await fileUpload.notifyBlobUploadStatus(
            correlationId: correlationId, isSuccess: isSuccess, statusCode: statusCode,
            statusDescription: statusDescription)
    }

    /// Uploads a file in one call: asks the hub for a blob (``storageInfo(forBlob:)``), streams
    /// `body` (exactly `length` bytes) to blob storage as a block blob, and notifies the hub of
    /// the outcome, a failure included. Errors before the hub gave a blob are thrown as they
    /// are; later ones as ``BlobUploadFailure``.
    public func uploadBlob<Body: AsyncSequence>(
        named blobName: String, length: Int, contentType: String? = nil, body: Body
    ) async throws -> BlobUploadResult where Body.Element == Data {
        try checkNotShutDown()
        return try await fileUpload.uploadBlob(named: blobName, length: length, contentType: contentType, body: body)
    }
}
