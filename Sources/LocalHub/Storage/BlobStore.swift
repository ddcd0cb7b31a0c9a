import Foundation
import IoTHubProtocol
import NIOConcurrencyHelpers

/// The blob storage behind file uploads: Azure Blob's "Put Blob" and "Get Blob" for block blobs,
/// authorised by a service SAS the hub signs with a key of its own.
final class BlobStore: Sendable {
    struct Blob: Sendable {
        var data: Data
        var contentType: String?
        var lastModified: Date
        var etag: String
    }

    private let key: String = IdentityAuthentication.randomKey()
    private let blobs = NIOLockedValueBox([String: Blob]())

    /// A SAS query (`?sv=…&sr=b&sp=rcw&se=…&sig=…`) for one blob.
    func signature(container: String, blob: String, expiry: Date) -> String {
        let se = Self.timestamp(expiry)
        let sig =
            (try? SASToken.sign(
                Self.stringToSign(container: container, blob: blob, permissions: "rcw", expiry: se), key: key)) ?? ""
        return "?sv=2018-03-28&sr=b&sp=rcw&se=\(PercentEncoding.encode(se))&sig=\(PercentEncoding.encode(sig))"
    }

    /// Checks a SAS query for `permission` (`r` read, `w` write) on a blob.
    func authorize(container: String, blob: String, query: [String: String], permission: Character, now: Date = Date())
        -> Bool
    {
        guard let sig = query["sig"], let se = query["se"], let sp = query["sp"], query["sr"] == "b",
            sp.contains(permission),
            let expiry = ISO8601DateFormatter().date(from: se), expiry > now,
            let expected = try? SASToken.sign(
                Self.stringToSign(container: container, blob: blob, permissions: sp, expiry: se), key: key)
        else { return false }
        return expected.utf8.elementsEqual(sig.utf8)
    }

    func put(container: String, blob: String, data: Data, contentType: String?, now: Date = Date()) -> String {
        let etag =
            "\"0x\(String(UInt64(now.timeIntervalSince1970 * 1000), radix: 16, uppercase: true))\(String(UInt32.random(in: 0...UInt32.max), radix: 16, uppercase: true))\""
        blobs.withLockedValue {
            $0["\(container)/\(blob)"] = Blob(data: data, contentType: contentType, lastModified: now, etag: etag)
        }
        return etag
    }

    func get(container: String, blob: String) -> Blob? {
        blobs.withLockedValue { $0["\(container)/\(blob)"] }
    }

    /// Every blob name (`container/blob`) with its size.
    func list() -> [(name: String, size: Int)] {
        blobs.withLockedValue { blobs in blobs.map { ($0.key, $0.value.data.count) }.sorted { $0.name < $1.name } }
    }

    private static func stringToSign(container: String, blob: String, permissions: String, expiry: String) -> String {
        "\(permissions)\n\(expiry)\n/blob/\(container)/\(blob)"
    }

    private static func timestamp(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }
}
