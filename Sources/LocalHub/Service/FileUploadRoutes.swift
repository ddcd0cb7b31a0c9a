import IoTHubProtocol

/// IoT Hub's device API for file uploads, called by devices with their own credentials:
/// `POST /devices/{id}/files` (get blob storage for a file) and
/// `POST /devices/{id}/files/notifications` (report how the upload went).
struct FileUploadRoutes: Sendable {
    let hub: Hub

    func register(on router: inout Router) {
        router.add(.POST, "devices/:id/files") { request, parameters throws(ServiceError) in
            let key = IdentityKey(deviceId: parameters["id"])
            try hub.authorizeDevice(
                key, authorization: request.authorization, clientCertificateDER: request.clientCertificateDER)
            guard let blobName = try request.json()["blobName"].flatMap(RegistryJSON.stringValue) else {
                throw .badRequest("blobName is required")
            }
            let upload = try hub.startFileUpload(for: key, blobName: blobName)
            return .json([
                "correlationId": .string(upload.correlationId), "hostName": .string(upload.hostName),
                "containerName": .string(upload.containerName), "blobName": .string(upload.blobName),
                "sasToken": .string(upload.sasToken),
            ])
        }
        router.add(.POST, "devices/:id/files/notifications") { request, parameters throws(ServiceError) in
            let key = IdentityKey(deviceId: parameters["id"])
            try hub.authorizeDevice(
                key, authorization: request.authorization, clientCertificateDER: request.clientCertificateDER)
            let body = try request.json()
            guard let correlationId = body["correlationId"].flatMap(RegistryJSON.stringValue) else {
                throw .badRequest("correlationId is required")
            }
            guard case .bool(let isSuccess)? = body["isSuccess"] else {
                throw .badRequest("isSuccess must be true or false")
            }
            try hub.completeFileUpload(
                for: key, correlationId: correlationId, isSuccess: isSuccess,
                statusCode: body["statusCode"]?.intValue ?? (isSuccess ? 200 : 500),
                statusDescription: body["statusDescription"].flatMap(RegistryJSON.stringValue) ?? "")
            return .empty()
        }
    }
}
