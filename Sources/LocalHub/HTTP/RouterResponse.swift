import Foundation
import IoTHubProtocol
import NIOCore
import NIOFoundationCompat
import NIOHTTP1

/// What a route answers: a status, headers, and a whole body or a stream of chunks
/// (server-sent events).
struct RouterResponse: Sendable {
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

    static func json(_ value: JSONValue, status: HTTPResponseStatus = .ok, headers: HTTPHeaders = [:]) -> RouterResponse
    {
        var headers = headers
        headers.replaceOrAdd(name: "Content-Type", value: "application/json; charset=utf-8")
        return RouterResponse(status: status, headers: headers, body: .buffer(ByteBuffer(data: value.encoded())))
    }

    static func empty(_ status: HTTPResponseStatus = .noContent, headers: HTTPHeaders = [:]) -> RouterResponse {
        RouterResponse(status: status, headers: headers)
    }

    /// IoT Hub's error body: `{"Message": "ErrorCode:…;…", "ExceptionMessage": …}`, plus the numeric code.
    static func error(_ error: ServiceError) -> RouterResponse {
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

extension RouterResponse {
    /// The same response with another status.
    func withStatus(_ status: HTTPResponseStatus) -> RouterResponse {
        var copy = self
        copy.status = status
        return copy
    }
}
