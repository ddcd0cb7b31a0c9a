import Foundation
import IoTHubProtocol
import NIOCore
import NIOFoundationCompat
import NIOHTTP1

/// An HTTP request as the hub's handlers see it: fully read, path split and decoded.
struct HTTPRequest: Sendable {
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
                let value = parts.count > 1 ? PercentEncoding.decode(parts[1].replacingOccurrences(of: "+", with: " ")) : ""
                query[key] = value
            }
            self.query = query
        } else {
            pathPart = uri[...]
            query = [:]
        }
        path = String(pathPart)
        pathSegments = pathPart.split(separator: "/", omittingEmptySubsequences: true).map { PercentEncoding.decode($0) }
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

/// A response: a whole body, or a stream of chunks (server-sent events).
struct HTTPResponse: Sendable {
    enum Body: Sendable {
        case buffer(ByteBuffer)
        case stream(AsyncStream<ByteBuffer>)
    }

    var status: HTTPResponseStatus
    var headers: HTTPHeaders
    var body: Body

    init(status: HTTPResponseStatus, headers: HTTPHeaders = [:], body: Body = .buffer(ByteBuffer())) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    static func json(_ value: JSONValue, status: HTTPResponseStatus = .ok, headers: HTTPHeaders = [:]) -> HTTPResponse {
        var headers = headers
        headers.replaceOrAdd(name: "Content-Type", value: "application/json; charset=utf-8")
        return HTTPResponse(status: status, headers: headers, body: .buffer(ByteBuffer(data: value.encoded())))
    }

    static func empty(_ status: HTTPResponseStatus = .noContent, headers: HTTPHeaders = [:]) -> HTTPResponse {
        HTTPResponse(status: status, headers: headers)
    }

    /// IoT Hub's error body: `{"Message": "ErrorCode:…;…", "ExceptionMessage": …}`, plus the numeric code.
    static func error(_ error: ServiceError) -> HTTPResponse {
        let (code, name) = error.iotHubCode
        var headers: HTTPHeaders = ["iothub-errorcode": name]
        if error == .throttled { headers.add(name: "Retry-After", value: "1") }
        return .json(
            [
                "Message": .string("ErrorCode:\(name);\(error.message)"),
                "ExceptionMessage": .string(error.message),
                "errorCode": .integer(Int64(code)),
            ],
            status: error.status, headers: headers)
    }
}
