import FoundationEssentials
import IoTHubProtocol

/// The Device Provisioning Service's MQTT protocol as the device sees it, as pure values: the
/// CONNECT user name and password, the request topics and the parsing of the answers (see
/// docs/ARCHITECTURE.md, "Device Provisioning Service").
enum ProvisioningWire {
    /// The device API version of the MQTT user name.
    static let apiVersion = "2019-03-31"
    /// What the device subscribes to before it sends anything.
    static let responseFilter = "$dps/registrations/res/#"
    static let responsePrefix = "$dps/registrations/res/"
    /// The policy name a device's SAS token carries.
    static let tokenKeyName = "registration"

    /// DPS's rule for registration ids: 1–128 lower-case letters, digits or `-._:`, first and
    /// last a letter or digit.
    static func isValidRegistrationId(_ id: String) -> Bool {
        let alphanumeric = Set("abcdefghijklmnopqrstuvwxyz0123456789")
        let allowed = alphanumeric.union("-._:")
        guard let first = id.first, let last = id.last, id.count <= 128 else { return false }
        return alphanumeric.contains(first) && alphanumeric.contains(last) && id.allSatisfy(allowed.contains)
    }

    /// `{idScope}/registrations/{registrationId}/api-version=…&ClientVersion=…` (no `?`).
    static func username(idScope: String, registrationId: String, productInfo: String) -> String {
        "\(idScope)/registrations/\(registrationId)/api-version=\(apiVersion)&ClientVersion=\(PercentEncoding.encode(UserAgent.string + productInfo))"
    }

    /// The resource a device's SAS token signs.
    static func resourceURI(idScope: String, registrationId: String) -> String {
        "\(idScope)/registrations/\(registrationId)"
    }

    static func registerTopic(rid: String) -> String {
        "$dps/registrations/PUT/iotdps-register/?$rid=\(PercentEncoding.encode(rid))"
    }

    static func operationStatusTopic(rid: String, operationId: String) -> String {
        "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=\(PercentEncoding.encode(rid))&operationId=\(PercentEncoding.encode(operationId))"
    }

    /// The register request's body: `{"registrationId": …, "payload": … or null}`.
    static func registerBody(registrationId: String, payload: JSONValue?) -> Data {
        JSONValue.object(["registrationId": .string(registrationId), "payload": payload ?? .null]).encoded()
    }

    /// One answer: `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]` and its body.
    struct Response: Sendable, Equatable {
        var status: Int
        var rid: String
        /// Seconds to wait before asking again, when DPS said.
        var retryAfterSeconds: Int?
        var body: Data

        /// Parses an answer's topic; nil when it is not a DPS answer with a status and a `$rid`.
        init?(topic: String, body: Data) {
            guard topic.hasPrefix(ProvisioningWire.responsePrefix) else { return nil }
            let rest = topic.dropFirst(ProvisioningWire.responsePrefix.count)
            guard let slash = rest.firstIndex(of: "/"), let status = Int(rest[..<slash]) else { return nil }
            var query = rest[rest.index(after: slash)...]
            guard query.hasPrefix("?") else { return nil }
            query = query.dropFirst()
            var properties: [String: String] = [:]
            for pair in query.split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let key = PercentEncoding.decode(String(parts[0]))
                properties[key] = parts.count > 1 ? PercentEncoding.decode(String(parts[1])) : ""
            }
            guard let rid = properties["$rid"] else { return nil }
            self.status = status
            self.rid = rid
            self.retryAfterSeconds = properties["retry-after"].flatMap { Int($0) }.flatMap { $0 >= 0 ? $0 : nil }
            self.body = body
        }
    }
}
