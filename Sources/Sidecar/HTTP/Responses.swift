import FoundationEssentials
import HTTPTypes
import Hummingbird
import IoTHubProtocol
import NIOCore

/// The few shapes the sidecar's answers take.
extension Response {
    /// 204, closing the connection after a long-poll that found nothing.
    static func noContent(closing: Bool = false) -> Response {
        var headers = HTTPFields()
        if closing { headers[.connection] = "close" }
        return Response(status: .noContent, headers: headers)
    }

    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        json(data: value.encoded(), status: status)
    }

    static func json(data: Data, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }
}

extension ResponseBody {
    /// A body that runs `ifNotWritten` when it cannot be written to the caller (gone).
    static func data(_ data: Data, ifNotWritten: @escaping @Sendable () -> Void) -> ResponseBody {
        ResponseBody(contentLength: data.count) { writer in
            do {
                try await writer.write(ByteBuffer(bytes: data))
                try await writer.finish(nil)
            } catch {
                ifNotWritten()
                throw error
            }
        }
    }
}

/// JSON written by hand where it is the hot path (telemetry answers): JSONEncoder cost more
/// than the rest of the request.
enum JSONText {
    /// `text` as a JSON string literal, quotes included.
    static func quoted(_ text: String) -> String {
        // Most values (message ids, lock tokens) need no escaping: copy them in one piece.
        if !text.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            return "\"" + text + "\""
        }
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}
