import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1

/// The blob listener's routes: Azure Blob "Put Blob" (block blobs) and "Get Blob", authorised
/// by the SAS query string that a file upload hands out.
struct BlobRoutes: Sendable {
    let blobs: BlobStore

    func register(on router: inout Router) {
        router.add(.PUT, ":container/*blob") { request, parameters throws(ServiceError) in
            let (container, blob) = (parameters["container"], parameters["blob"])
            guard blobs.authorize(container: container, blob: blob, query: request.query, permission: "w") else {
                throw .blobAuthenticationFailed("the SAS does not grant writing \(container)/\(blob)")
            }
            guard request.headers.first(name: "x-ms-blob-type") == "BlockBlob" else {
                throw .badRequest("x-ms-blob-type: BlockBlob is required")
            }
            let etag = blobs.put(
                container: container, blob: blob, data: request.bodyData,
                contentType: request.headers.first(name: "Content-Type"))
            return .empty(
                .created,
                headers: ["ETag": etag, "x-ms-request-server-encrypted": "false", "x-ms-version": "2018-03-28"])
        }
        router.add(.GET, ":container/*blob") { request, parameters throws(ServiceError) in
            let (container, blob) = (parameters["container"], parameters["blob"])
            guard blobs.authorize(container: container, blob: blob, query: request.query, permission: "r") else {
                throw .blobAuthenticationFailed("the SAS does not grant reading \(container)/\(blob)")
            }
            guard let stored = blobs.get(container: container, blob: blob) else {
                throw .resourceNotFound("no blob \(container)/\(blob)")
            }
            return RouterResponse(
                status: .ok,
                headers: [
                    "Content-Type": stored.contentType ?? "application/octet-stream", "ETag": stored.etag,
                    "x-ms-blob-type": "BlockBlob",
                ],
                body: .buffer(ByteBuffer(data: stored.data)))
        }
    }
}
