import Foundation
import IoTHubProtocol

/// The Device Provisioning Service's device-side wire format over MQTT, as pure values:
/// registration ids, the CONNECT user name, the request and response topics, and the key an
/// enrollment group derives for one device (docs/ARCHITECTURE.md, Device Provisioning Service).
enum ProvisioningProtocol {
    /// The filter a device subscribes to for every answer of the service.
    static let responseFilter = "$dps/registrations/res/#"
    /// The longest registration request body accepted (the JSON with the device's payload).
    static let maximumRequestSize = 64 * 1024
    /// The policy name the device SDKs other than Python's put in their SAS token (`skn`).
    static let registrationKeyName = "registration"

    /// DPS's rule for registration ids: 1 to 128 characters, lower-case ASCII letters, digits
    /// and `-._:`, beginning and ending with a letter or digit.
    static func isValidRegistrationId(_ id: String) -> Bool {
        let alphanumeric = Set("abcdefghijklmnopqrstuvwxyz0123456789")
        let allowed = alphanumeric.union("-._:")
        guard let first = id.first, let last = id.last, id.count <= 128 else { return false }
        return alphanumeric.contains(first) && alphanumeric.contains(last) && id.allSatisfy(allowed.contains)
    }

    /// Why `id` is not a registration id, for error messages (without repeating a long id).
    static func registrationIdProblem(_ id: String) -> String {
        "the registration id '\(id.prefix(64))\(id.count > 64 ? "…" : "")' is invalid: use 1 to 128 lower-case letters, digits or -._:, beginning and ending with a letter or digit"
    }

    /// The resource a device's SAS token signs: `{idScope}/registrations/{registrationId}`.
    static func resourceURI(idScope: String, registrationId: String) -> String {
        "\(idScope)/registrations/\(registrationId)"
    }

    /// The key a device of a symmetric-key enrollment group uses: HMAC-SHA256 of its
    /// registration id under the group key, base64 (both keys base64). Nil if the group key is
    /// not base64.
    static func derivedDeviceKey(groupKey: String, registrationId: String) -> String? {
        try? EnrollmentGroupKey.deviceKey(groupKey: groupKey, registrationId: registrationId)
    }

    /// A DPS CONNECT user name: `{idScope}/registrations/{registrationId}/api-version=…&ClientVersion=…`.
    struct Username: Sendable, Equatable {
        var idScope: String
        var registrationId: String
        /// The decoded query parameters (`api-version`, `ClientVersion`).
        var parameters: [String: String]

        /// Parses the user name; nil when it does not have DPS's shape. IoT Hub's user names
        /// (`{host}/{deviceId}/?api-version=…`) never parse: their second segment is a device id
        /// followed by `/?`, not `registrations/{id}/`.
        init?(parsing text: String) {
            let parts = text.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: false)
            guard parts.count >= 3, !parts[0].isEmpty, parts[1] == "registrations", !parts[2].isEmpty,
                !parts[2].contains("?")
            else { return nil }
            var parameters: [String: String] = [:]
            if parts.count == 4 {
                var query = parts[3]
                if query.hasPrefix("?") { query = query.dropFirst() }
                for pair in query.split(separator: "&") {
                    guard let equals = pair.firstIndex(of: "=") else { return nil }
                    parameters[PercentEncoding.decode(pair[..<equals])] = PercentEncoding.decode(
                        pair[pair.index(after: equals)...])
                }
            }
            idScope = String(parts[0])
            registrationId = PercentEncoding.decode(parts[2])
            self.parameters = parameters
        }
    }

    /// A request a device publishes.
    enum Request: Sendable, Equatable {
        /// `$dps/registrations/PUT/iotdps-register/?$rid={rid}`
        case register(requestId: String)
        /// `$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={id}`
        case operationStatus(requestId: String, operationId: String)

        private static let registerPrefix = "$dps/registrations/PUT/iotdps-register/?"
        private static let statusPrefix = "$dps/registrations/GET/iotdps-get-operationstatus/?"

        /// Parses a request topic; nil for any other topic, or without a request id.
        init?(topic: String) {
            let isRegister = topic.hasPrefix(Self.registerPrefix)
            guard isRegister || topic.hasPrefix(Self.statusPrefix) else { return nil }
            let query = topic.dropFirst(isRegister ? Self.registerPrefix.count : Self.statusPrefix.count)
            var fields: [String: String] = [:]
            for pair in query.split(separator: "&") {
                guard let equals = pair.firstIndex(of: "=") else { return nil }
                let name = PercentEncoding.decode(pair[..<equals])
                guard fields[name] == nil else { return nil }
                fields[name] = PercentEncoding.decode(pair[pair.index(after: equals)...])
            }
            guard let requestId = fields["$rid"], !requestId.isEmpty else { return nil }
            if isRegister {
                self = .register(requestId: requestId)
            } else {
                guard let operationId = fields["operationId"], !operationId.isEmpty else { return nil }
                self = .operationStatus(requestId: requestId, operationId: operationId)
            }
        }

        var requestId: String {
            switch self {
            case .register(let requestId), .operationStatus(let requestId, _): requestId
            }
        }
    }

    /// The topic of an answer: `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]`.
    static func responseTopic(status: Int, requestId: String, retryAfter: Int?) -> String {
        var topic = "$dps/registrations/res/\(status)/?$rid=\(PercentEncoding.encode(requestId))"
        if let retryAfter { topic += "&retry-after=\(retryAfter)" }
        return topic
    }

    /// The body of a registration request: `{"registrationId": …, "payload": …}`.
    struct RegistrationRequest: Sendable, Equatable {
        var registrationId: String?
        /// The device's custom payload; nil when absent or JSON null.
        var payload: JSONValue?

        /// Parses the body; an empty body is a request without a payload (some clients send none).
        init(parsing data: Data) throws(ProvisioningFailure) {
            guard data.count <= ProvisioningProtocol.maximumRequestSize else {
                throw .payloadTooLarge(
                    "the registration request is \(data.count) bytes; at most \(ProvisioningProtocol.maximumRequestSize) are accepted"
                )
            }
            let trimmed = data.drop(while: { [0x20, 0x0A, 0x0D, 0x09].contains($0) })
            if trimmed.isEmpty { return }
            guard let json = try? JSONValue(parsing: data), let members = json.objectValue else {
                throw .badRequest("the registration request is not a JSON object")
            }
            if let id = members["registrationId"] {
                guard case .string(let text) = id else { throw .badRequest("registrationId must be a string") }
                registrationId = text
            }
            if let payload = members["payload"], payload != .null { self.payload = payload }
        }

        init(registrationId: String?, payload: JSONValue?) {
            self.registrationId = registrationId
            self.payload = payload
        }
    }
}

/// A refusal of the provisioning service, with DPS's HTTP status and error code.
enum ProvisioningFailure: Error, Sendable, Equatable {
    case badRequest(String)
    case unauthorized(String)
    case notFound(String)
    case conflict(String)
    case preconditionFailed(String)
    case payloadTooLarge(String)

    var status: Int {
        switch self {
        case .badRequest: 400
        case .unauthorized: 401
        case .notFound: 404
        case .conflict: 409
        case .preconditionFailed: 412
        case .payloadTooLarge: 413
        }
    }

    /// DPS's numeric error code (the status times 1000, plus a detail).
    var errorCode: Int {
        switch self {
        case .badRequest: 400004
        case .unauthorized: 401002
        case .notFound: 404201
        case .conflict: 409201
        case .preconditionFailed: 412201
        case .payloadTooLarge: 413001
        }
    }

    var message: String {
        switch self {
        case .badRequest(let text), .unauthorized(let text), .notFound(let text), .conflict(let text),
            .preconditionFailed(let text),
            .payloadTooLarge(let text):
            text
        }
    }

    /// DPS's error body: `{"errorCode", "trackingId", "message", "timestampUtc"}`.
    func json(now: Date = Date()) -> JSONValue {
        [
            "errorCode": .integer(Int64(errorCode)), "trackingId": .string(UUID().uuidString.lowercased()),
            "message": .string(message), "timestampUtc": ProvisioningJSON.timestamp(now),
        ]
    }
}
