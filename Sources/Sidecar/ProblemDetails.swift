import FoundationEssentials
import IoTHubDevice
import IoTHubProtocol

/// An RFC 9457 problem document, the body of every error the sidecar answers with. `code` is
/// azure-iot-device (Python)'s exception class (or one of the sidecar's own codes); `title` is fixed per
/// code, `detail` says what happened this time and never holds a secret.
struct ProblemDetails: Error, Sendable, Equatable, Codable {
    var type: String
    var title: String
    var status: Int
    var detail: String
    var code: String
    /// The request's path.
    var instance: String?
    /// `ValueError` only: the member, header or query parameter that was wrong.
    var field: String?
    /// `PUT /blob/{blobName}` only: the status blob storage answered.
    var upstreamStatus: Int?
    /// `PUT /blob/{blobName}` only: the upload's correlation id, to notify again.
    var correlationId: String?
    /// Seconds for `Retry-After` (503 and 429), not part of the JSON body.
    var retryAfterSeconds: Int?
    /// The answer ends the connection (`Connection: close`) because the request left it
    /// unusable; not part of the JSON body.
    var closesConnection = false

    enum CodingKeys: String, CodingKey {
        case type, title, status, detail, code, instance, field, upstreamStatus, correlationId
    }

    /// The fixed title of each code (the `ErrorCode` table of `openapi/sidecar.yaml`).
    static func title(of code: String) -> String {
        switch code {
        case "CredentialError": "The hub refused the credentials"
        case "ConnectionFailedError": "Could not connect to the hub"
        case "ConnectionDroppedError": "The connection to the hub was lost"
        case "NoConnectionError": "Not connected to the hub"
        case "OperationTimeout": "No answer from the hub in time"
        case "OperationCancelled": "The operation was cancelled"
        case "ServiceError": "The hub answered with an error"
        case "ClientError": "The client could not do this"
        case "ValueError": "The request is invalid"
        case "Unauthorized": "Missing or wrong API token"
        case "NotFound": "Not found"
        case "MethodNotAllowed": "Method not allowed"
        case "MethodRequestExpired": "The method request has expired"
        case "OutboxFull": "The outbox is full"
        case "InsufficientStorage": "No space left for the outbox"
        default: "Error"
        }
    }

    init(status: Int, code: String, detail: String, field: String? = nil, retryAfterSeconds: Int? = nil) {
        self.type = "urn:iothub-sidecar:problem:\(code)"
        self.title = Self.title(of: code)
        self.status = status
        self.detail = detail
        self.code = code
        self.field = field
        self.retryAfterSeconds = retryAfterSeconds
    }

    /// A `ValueError` (400 unless `status` says otherwise).
    static func invalid(_ detail: String, field: String? = nil, status: Int = 400) -> ProblemDetails {
        ProblemDetails(status: status, code: "ValueError", detail: detail, field: field)
    }

    /// A `ValueError` (400) for a request whose HTTP/1 framing is broken; the connection closes.
    /// - Parameter reason: the parser's word for what is wrong.
    static func malformedRequest(_ reason: String) -> ProblemDetails {
        var problem = invalid("the request is not valid HTTP/1.1 (\(reason)); the connection is closed")
        problem.closesConnection = true
        return problem
    }

    /// A `ValueError` (408) for a request body that stopped arriving; the connection closes.
    static func requestBodyTimedOut(seconds: Int64) -> ProblemDetails {
        var problem = invalid(
            "the request body timed out after \(seconds) s without data; the connection is closed", status: 408)
        problem.closesConnection = true
        return problem
    }

    /// A `NotFound` (404).
    static func notFound(_ detail: String) -> ProblemDetails {
        ProblemDetails(status: 404, code: "NotFound", detail: detail)
    }

    /// A `ClientError` for something this identity cannot do (409).
    static func notForThisIdentity(_ detail: String) -> ProblemDetails {
        ProblemDetails(status: 409, code: "ClientError", detail: detail)
    }

    /// The HTTP answer for a client error, as the error table of docs/ARCHITECTURE.md ("Errors")
    /// maps it.
    /// - Parameter retryAfterSeconds: for connection errors, when trying again makes sense
    ///   (the client's retry interval).
    init(_ error: IoTHubError, retryAfterSeconds: Int) {
        let detail = SidecarEvent.message(of: error)
        switch error {
        case .credentialError:
            self.init(status: 502, code: error.code, detail: detail)
        case .connectionFailedError, .connectionDroppedError:
            self.init(status: 503, code: error.code, detail: detail, retryAfterSeconds: retryAfterSeconds)
        case .noConnectionError, .operationCancelled:
            self.init(status: 503, code: error.code, detail: detail)
        case .operationTimeout:
            self.init(status: 504, code: error.code, detail: detail)
        case .serviceError(let status, _, let retryAfter):
            let valid = (400...599).contains(status) ? status : 502
            self.init(
                status: valid, code: error.code, detail: detail,
                retryAfterSeconds: valid == 429 || valid == 503 ? retryAfter : nil)
        case .clientError:
            self.init(status: 500, code: error.code, detail: detail)
        case .valueError(let field, _):
            self.init(status: 400, code: error.code, detail: detail, field: field)
        case .messageTooLarge, .topicTooLong:
            self.init(status: 413, code: error.code, detail: detail)
        }
    }

    /// The HTTP answer for messages the outbox did not take.
    /// - Parameter inBatch: the messages are a batch's: an invalid entry refuses the whole
    ///   batch, as a `ValueError` naming the entry.
    init(_ error: OutboxError, inBatch: Bool, retryAfterSeconds: Int) {
        switch error {
        case .full(let bytes, let limit):
            self.init(
                status: 507, code: "OutboxFull",
                detail:
                    "the outbox is full (\(bytes) bytes wait; its limit is \(limit)): nothing was stored; try again once it has drained (GET /outbox)"
            )
        case .noSpace(let reason):
            self.init(
                status: 507, code: "InsufficientStorage",
                detail: "no space left on the device for the outbox (\(reason)): nothing was stored")
        case .invalid(let index, let error) where inBatch:
            self.init(
                status: 400, code: "ValueError",
                detail: "entry \(index): \(SidecarEvent.message(of: error)); nothing was stored", field: "[\(index)]")
        case .invalid(_, let error):
            self.init(error, retryAfterSeconds: retryAfterSeconds)
        case .storageFailed(let reason):
            self.init(status: 500, code: "ClientError", detail: "the outbox could not store the messages: \(reason)")
        }
    }

    /// The JSON body (`application/problem+json`).
    func encoded() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self))
            ?? Data(
                #"{"code":"ClientError","detail":"","status":500,"title":"Error","type":"urn:iothub-sidecar:problem:ClientError"}"#
                    .utf8)
    }
}
