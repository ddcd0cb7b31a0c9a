import Foundation
import IoTHubProtocol
import NIOCore
import NIOFoundationCompat
import NIOHTTP1

/// An HTTP request as the ``Router`` hands it to a route: fully read, path split and decoded.
struct RouterRequest: Sendable {
    var method: HTTPMethod
    /// The path without the query, percent-decoded per segment.
    var pathSegments: [String]
    var path: String
    var query: [String: String]
    var headers: HTTPHeaders
    var body: ByteBuffer
    /// DER of the TLS client certificate, when the client presented one.
    var clientCertificateDER: [UInt8]?

    init(head: HTTPRequestHead, body: ByteBuffer, clientCertificateDER: [UInt8]? = nil) {
        self.clientCertificateDER = clientCertificateDER
        method = head.method
        headers = head.headers
        self.body = body
        let uri = head.uri
        let pathPart: Substring
        if let questionMark = uri.firstIndex(of: "?") {
            pathPart = uri[..<questionMark]
            var query: [String: String] = [:]
            for pair in uri[uri.index(after: questionMark)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let key = PercentEncoding.decode(parts[0].replacingOccurrences(of: "+", with: " "))
                let value =
                    parts.count > 1 ? PercentEncoding.decode(parts[1].replacingOccurrences(of: "+", with: " ")) : ""
                query[key] = value
            }
            self.query = query
        } else {
            pathPart = uri[...]
            query = [:]
        }
        path = String(pathPart)
        pathSegments = pathPart.split(separator: "/", omittingEmptySubsequences: true).map {
            PercentEncoding.decode($0)
        }
    }

    var bodyData: Data { Data(body.readableBytesView) }

    /// The body parsed as JSON.
    func json() throws(ServiceError) -> JSONValue {
        guard body.readableBytes > 0 else { throw .badRequest("the request has no body") }
        do {
            return try JSONValue(parsing: bodyData)
        } catch {
            throw .badRequest("the body is not valid JSON")
        }
    }

    /// The `after` cursor of a long-poll: a sequence number, 0 when absent.
    func cursor() throws(ServiceError) -> UInt64 {
        guard let text = query["after"] else { return 0 }
        guard let value = UInt64(text) else { throw .badRequest("after must be a sequence number (0 or more)") }
        return value
    }

    /// An integer query parameter, within bounds.
    func integer(_ name: String, default defaultValue: Int, range: ClosedRange<Int>) throws(ServiceError) -> Int {
        guard let text = query[name] else { return defaultValue }
        guard let value = Int(text), range.contains(value) else {
            throw .badRequest("\(name) must be an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }
}
