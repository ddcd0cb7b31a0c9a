import FoundationEssentials
import HTTPTypes
import IoTHubDevice
import IoTHubProtocol

/// A received cloud-to-device (or module input) message as JSON: `GET /inbox` with
/// `Accept: application/json`, and `event: message`. Every system property and every
/// application property is carried exactly as received — names that are not HTTP header
/// tokens (spaces, non-ASCII), values with control characters — which the header form of
/// `GET /inbox` cannot do.
enum ReceivedMessageJSON {
    /// The media type asked for with `Accept`.
    static let mediaType = "application/json"

    /// The message's system properties under their camelCase names (those it has), and its
    /// application properties under `properties` (when it has any).
    static func propertyMembers(of message: Message) -> [String: JSONValue] {
        var members: [String: JSONValue] = [:]
        let system: [(String, String?)] = [
            ("messageId", message.messageId), ("correlationId", message.correlationId), ("to", message.to),
            ("userId", message.userId), ("contentType", message.contentType),
            ("contentEncoding", message.contentEncoding), ("expiryTimeUtc", message.expiryTimeUTC),
            ("ack", message.ack), ("inputName", message.inputName),
        ]
        for case (let key, let value?) in system { members[key] = .string(value) }
        if !message.properties.isEmpty {
            members["properties"] = .object(message.properties.mapValues(JSONValue.string))
        }
        return members
    }

    /// The body of `GET /inbox` in JSON: the lease, the payload (text when it is UTF-8,
    /// base64 otherwise, `bodyEncoding` says which) and every property.
    static func json(of lease: CloudToDeviceInbox.Lease) -> JSONValue {
        var members = propertyMembers(of: lease.message)
        members["lockToken"] = .string(lease.lockToken)
        members["deliveryCount"] = .integer(Int64(lease.deliveryCount))
        members["size"] = .integer(Int64(lease.message.payload.count))
        if let text = String(validating: lease.message.payload, as: UTF8.self) {
            members["body"] = .string(text)
            members["bodyEncoding"] = "utf-8"
        } else {
            members["body"] = .string(lease.message.payload.base64EncodedString())
            members["bodyEncoding"] = "base64"
        }
        return .object(members)
    }

    /// Whether a request's `Accept` asks for JSON: it names `application/json` with a
    /// quality above zero (`*/*` alone keeps the header form).
    static func isAccepted(by headers: HTTPFields) -> Bool {
        for field in headers[values: .accept] {
            for range in field.split(separator: ",") {
                let parts = range.split(separator: ";").map { $0.trimmingWhitespace() }
                guard let type = parts.first, type.lowercased() == mediaType else { continue }
                let quality = parts.dropFirst().first { $0.lowercased().hasPrefix("q=") }
                if let quality, let value = Double(quality.dropFirst(2)), value <= 0 { continue }
                return true
            }
        }
        return false
    }
}
