import Foundation
import IoTHubProtocol

/// An RFC 9457 problem document, the body of every error the sidecar answers with. `code` is
/// the Python SDK's exception class (or one of the sidecar's own codes).
struct ProblemDetails: Sendable, Equatable, Codable {
    var type: String
    var title: String
    var status: Int
    var detail: String
    var code: String
    /// Seconds for `Retry-After` (503 and 429), not part of the JSON body.
    var retryAfterSeconds: Int?

    enum CodingKeys: String, CodingKey {
        case type, title, status, detail, code
    }

    init(status: Int, code: String, title: String, detail: String, retryAfterSeconds: Int? = nil) {
        self.type = "urn:iothub-sidecar:problem:\(code)"
        self.title = title
        self.status = status
        self.detail = detail
        self.code = code
        self.retryAfterSeconds = retryAfterSeconds
    }

    /// The HTTP answer for a client error, as the table in DESIGN.md §4 maps it.
    /// - Parameter retryAfterSeconds: for connection errors, when trying again makes sense
    ///   (the client's retry interval).
    init(_ error: IoTHubError, retryAfterSeconds: Int) {
        let detail = error.description.drop { $0 != ":" }.dropFirst().trimmingCharacters(in: .whitespaces)
        switch error {
        case .credentialError:
            self.init(status: 502, code: error.code, title: "The hub refused the device's credentials", detail: detail)
        case .connectionFailedError:
            self.init(status: 503, code: error.code, title: "The hub cannot be reached", detail: detail, retryAfterSeconds: retryAfterSeconds)
        case .connectionDroppedError:
            self.init(status: 503, code: error.code, title: "The connection to the hub was lost", detail: detail, retryAfterSeconds: retryAfterSeconds)
        case .noConnectionError:
            self.init(status: 503, code: error.code, title: "Not connected to the hub", detail: detail)
        case .operationTimeout:
            self.init(status: 504, code: error.code, title: "The hub did not answer in time", detail: detail)
        case .operationCancelled:
            self.init(status: 503, code: error.code, title: "The operation was cancelled", detail: detail)
        case .serviceError(let status, _, let retryAfter):
            let valid = (400...599).contains(status) ? status : 502
            self.init(
                status: valid, code: error.code, title: "The hub answered with an error", detail: detail,
                retryAfterSeconds: status == 429 ? (retryAfter ?? retryAfterSeconds) : nil)
        case .clientError:
            self.init(status: 500, code: error.code, title: "The device client failed", detail: detail)
        case .valueError:
            self.init(status: 400, code: error.code, title: "The request is not valid", detail: detail)
        case .messageTooLarge:
            self.init(status: 413, code: error.code, title: "The message is too large", detail: detail)
        }
    }

    /// The JSON body (`application/problem+json`).
    func encoded() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)) ?? Data(#"{"status":500,"code":"ClientError"}"#.utf8)
    }
}
