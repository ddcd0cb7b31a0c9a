import FoundationEssentials
import HTTPTypes
import Hummingbird
import IoTHubProtocol
import NIOCore

/// Reading what a request carries — its body, media type, query and path parameters — with
/// every mistake answered as a `ValueError` problem naming what was wrong.
extension Request {
    /// Request bodies are limited to this, except blob uploads.
    static let bodyLimit = 16 * 1024 * 1024
    /// The longest long-poll, below the server's idle timeout.
    static let maximumPollTimeout = 55

    /// The media type, lower-case, without parameters; nil without `Content-Type`.
    var mediaType: String? {
        headers.joinedValue(of: .contentType).map(Self.mediaType(ofContentType:))
    }

    /// The media type of a `Content-Type` value: before any `;`, without surrounding blanks,
    /// in lower case.
    static func mediaType(ofContentType value: String) -> String {
        let utf8 = value.utf8
        let end = utf8.firstIndex(of: UInt8(ascii: ";")) ?? utf8.endIndex
        let isBlank = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        guard let first = utf8[..<end].firstIndex(where: { !isBlank($0) }),
            let last = utf8[..<end].lastIndex(where: { !isBlank($0) })
        else {
            return ""
        }
        let type = utf8[first...last]
        // Usually already lower case: no copy byte by byte.
        if !type.contains(where: { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) }) {
            return String(Substring(type))
        }
        return String(
            decoding: type.map { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) ? $0 + 32 : $0 }, as: UTF8.self)
    }

    /// A JSON endpoint takes no `Content-Type` as JSON, and refuses any other media type.
    func requireJSON(also others: Set<String> = []) throws(ProblemDetails) {
        guard let type = mediaType, type != "application/json", !others.contains(type) else { return }
        throw .invalid("send the body as application/json, not \(type)", status: 415)
    }

    /// The whole body, at most `limit` bytes (413 beyond).
    func collectedBody(limit: Int = Request.bodyLimit) async throws -> Data {
        do {
            var request = self
            let buffer = try await request.collectBody(upTo: limit)
            return Data(buffer.readableBytesView)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw ProblemDetails.invalid("the request body exceeds \(limit) bytes", status: 413)
        } catch is NIOTooManyBytesError {
            throw ProblemDetails.invalid("the request body exceeds \(limit) bytes", status: 413)
        }
    }

    /// The body as JSON.
    func jsonBody() async throws -> JSONValue {
        let body = try await collectedBody()
        do {
            return try JSONValue(parsing: body)
        } catch {
            throw ProblemDetails.invalid("the body is not valid JSON")
        }
    }

    /// The `timeout` query parameter of a long-poll: 0–55 seconds, 30 by default.
    func pollTimeout() throws(ProblemDetails) -> Int {
        try integerQuery("timeout", default: 30, range: 0...Self.maximumPollTimeout)
    }

    /// The integer query parameter `name`, `value` when absent.
    func integerQuery(_ name: String, default value: Int, range: ClosedRange<Int>) throws(ProblemDetails) -> Int {
        guard let text = uri.queryParameters.get(name) else { return value }
        guard let number = Int(text), range.contains(number) else {
            throw .invalid("\(name) must be an integer from \(range.lowerBound) to \(range.upperBound)", field: name)
        }
        return number
    }
}

extension BasicRequestContext {
    /// The path parameter `name`, percent-decoded and not empty.
    func pathParameter(_ name: String) throws(ProblemDetails) -> String {
        guard let raw = parameters.get(name), let value = PercentEncoding.strictlyDecode(raw[...]), !value.isEmpty
        else {
            throw .invalid("\(name) is missing or not valid percent-encoded UTF-8", field: name)
        }
        return value
    }
}

extension JSONValue {
    /// The members of a JSON object body; `explanation` says what was expected otherwise.
    func objectMembers(or explanation: String, field: String? = nil) throws(ProblemDetails) -> [String: JSONValue] {
        guard case .object(let members) = self else { throw .invalid(explanation, field: field) }
        return members
    }
}

extension [String: JSONValue] {
    /// The member `name`, which must be a 32-bit integer (as the contract says).
    func int32(_ name: String) throws(ProblemDetails) -> Int32 {
        guard case .integer(let value)? = self[name], let value32 = Int32(exactly: value) else {
            throw .invalid("\(name) must be an integer from \(Int32.min) to \(Int32.max)", field: name)
        }
        return value32
    }
}

extension HTTPFields {
    /// What `self[name]` answers (repeated fields joined with `, `, cookies with `; `), found
    /// by going through the fields: the subscript first builds an index of all the fields by
    /// name, which costs a request more than the few fields it has (docs/PERFORMANCE.md, "Work
    /// per request").
    func joinedValue(of name: HTTPField.Name) -> String? {
        var joined: String?
        for field in self where field.name == name {
            joined = joined.map { $0 + (name == .cookie ? "; " : ", ") + field.value } ?? field.value
        }
        return joined
    }
}
