public import FoundationEssentials

/// An IoT Hub shared access signature:
/// `SharedAccessSignature sr=<resource>&sig=<signature>&se=<expiry>[&skn=<key name>]`.
///
/// A token is made by signing `urlencode(resourceURI) + "\n" + expiry` with HMAC-SHA256 under the
/// base64-decoded shared access key, exactly as Microsoft's SDKs do. The local hub uses
/// ``isSigned(withKey:)`` to check tokens that devices present.
public struct SASToken: Sendable, Hashable {
    /// The resource the token grants access to, decoded: `myhub.azure-devices.net/devices/d1`.
    public let resourceURI: String
    /// The resource exactly as it appears (URL-encoded) in the token's `sr` field.
    public let encodedResourceURI: String
    /// The base64 HMAC-SHA256 signature (decoded from the token's URL-encoded `sig` field).
    public let signature: String
    /// Expiry in seconds since the Unix epoch (UTC).
    public let expiry: Int
    /// The shared access policy name (`skn`) for policy tokens; nil for device and module tokens.
    public let keyName: String?
    /// The token text, as sent in an MQTT password or an HTTP `Authorization` header.
    public let string: String

    /// Default lifetime of tokens that the client makes itself (the Python SDK's `sastoken_ttl`).
    public static let defaultTimeToLive: Int = 3600

    /// The resource URI of a device or module identity: `{hostName}/devices/{deviceId}` or
    /// `{hostName}/devices/{deviceId}/modules/{moduleId}`.
    public static func resourceURI(hostName: String, deviceId: String, moduleId: String? = nil) -> String {
        if let moduleId {
            return "\(hostName)/devices/\(deviceId)/modules/\(moduleId)"
        }
        return "\(hostName)/devices/\(deviceId)"
    }

    /// The text that is signed: the URL-encoded resource URI, a newline, the expiry.
    public static func stringToSign(encodedResourceURI: String, expiry: Int) -> String {
        "\(encodedResourceURI)\n\(expiry)"
    }

    /// Signs a new token for `resourceURI` that expires at `expiry`.
    ///
    /// - Parameters:
    ///   - key: The shared access key, base64 as the portal and connection strings give it.
    ///   - keyName: The policy name, for policy (service) tokens only.
    /// - Throws: ``IoTHubError/valueError(field:reason:)`` when `key` is not base64 or
    ///   `resourceURI` is empty.
    public init(resourceURI: String, key: String, expiry: Int, keyName: String? = nil) throws(IoTHubError) {
        guard !resourceURI.isEmpty else {
            throw .valueError(field: "sr", reason: "the resource URI is empty")
        }
        let encodedResourceURI = PercentEncoding.encode(resourceURI)
        let signature = try Self.sign(
            Self.stringToSign(encodedResourceURI: encodedResourceURI, expiry: expiry), key: key)
        self.init(resourceURI: resourceURI, expiry: expiry, signature: signature, keyName: keyName)
    }

    /// A token whose signature was made elsewhere — by an IoT Edge security daemon (the
    /// workload API), which holds the key — over
    /// ``stringToSign(encodedResourceURI:expiry:)`` of `PercentEncoding.encode(resourceURI)`.
    public init(resourceURI: String, expiry: Int, signature: String, keyName: String? = nil) {
        let encodedResourceURI = PercentEncoding.encode(resourceURI)
        var text = "SharedAccessSignature sr=\(encodedResourceURI)"
        text += "&sig=\(PercentEncoding.encode(signature))&se=\(expiry)"
        if let keyName {
            text += "&skn=\(keyName)"
        }
        self.resourceURI = resourceURI
        self.encodedResourceURI = encodedResourceURI
        self.signature = signature
        self.expiry = expiry
        self.keyName = keyName
        self.string = text
    }

    /// Signs a new token that expires `timeToLive` seconds after `now`.
    public init(
        resourceURI: String, key: String, timeToLive: Int = SASToken.defaultTimeToLive,
        keyName: String? = nil, now: Date = Date()
    ) throws(IoTHubError) {
        try self.init(
            resourceURI: resourceURI, key: key, expiry: Int(now.timeIntervalSince1970) + timeToLive,
            keyName: keyName)
    }

    /// Parses a token string such as a user hands to `create_from_sastoken`.
    ///
    /// The fields `sr`, `sig` and `se` are required, `skn` is optional, and anything else, or a
    /// field given twice, is an error naming that field.
    public init(parsing text: String) throws(IoTHubError) {
        let prefix = "SharedAccessSignature "
        guard text.hasPrefix(prefix) else {
            throw .valueError(
                field: "SAS token", reason: "does not start with 'SharedAccessSignature '")
        }
        var fields: [String: String] = [:]
        // Errors name fields by position, or by name when it is one of the four: a signature
        // must never be repeated back (in a terminal, a log, an HTTP answer).
        let parts = text.dropFirst(prefix.count).split(separator: "&", omittingEmptySubsequences: false)
        for (index, field) in parts.enumerated() {
            let position = "field \(index + 1) of \(parts.count)"
            guard let equals = field.firstIndex(of: "=") else {
                throw .valueError(
                    field: "SAS token", reason: "has a \(position) without '=' (fields are name=value, joined by '&')")
            }
            let name = field[..<equals].trimmingWhitespace()
            let value = field[field.index(after: equals)...].trimmingWhitespace()
            guard ["sr", "sig", "se", "skn"].contains(name) else {
                throw .valueError(
                    field: "SAS token", reason: "has an unknown name in \(position) (allowed: sr, sig, se, skn)")
            }
            guard fields[name] == nil else {
                throw .valueError(field: "SAS token", reason: "gives the field '\(name)' twice")
            }
            guard !value.isEmpty else {
                throw .valueError(field: "SAS token", reason: "has an empty field '\(name)'")
            }
            fields[name] = value
        }
        for required in ["sr", "sig", "se"] where fields[required] == nil {
            throw .valueError(field: "SAS token", reason: "has no field '\(required)'")
        }
        guard let expiryText = fields["se"], let expiry = Int(expiryText), expiry >= 0 else {
            throw .valueError(
                field: "SAS token", reason: "has an expiry 'se' that is not a number of seconds since 1970")
        }
        let encodedResourceURI = fields["sr"] ?? ""
        self.encodedResourceURI = encodedResourceURI
        self.resourceURI = PercentEncoding.decode(encodedResourceURI)
        self.signature = PercentEncoding.decode(fields["sig"] ?? "")
        self.expiry = expiry
        self.keyName = fields["skn"]
        self.string = text
    }

    /// The expiry as a date.
    public var expiryDate: Date { Date(timeIntervalSince1970: TimeInterval(expiry)) }

    /// Whether the token has expired at `now`.
    public func isExpired(at now: Date = Date()) -> Bool {
        Double(expiry) <= now.timeIntervalSince1970
    }

    /// Whether the signature was made with `key` (base64), compared in constant time.
    ///
    /// The signed text is rebuilt both from the `sr` field as the token carries it and from its
    /// canonical encoding, so tokens from SDKs that encode with lower-case hex also verify.
    public func isSigned(withKey key: String) -> Bool {
        guard let presented = Data(base64Encoded: signature) else { return false }
        let candidates = Set([encodedResourceURI, PercentEncoding.encode(resourceURI)])
        for candidate in candidates {
            let text = Self.stringToSign(encodedResourceURI: candidate, expiry: expiry)
            guard let expected = try? Self.signatureBytes(text, key: key) else { return false }
            if HMACSHA256.constantTimeEquals(expected, Array(presented)) { return true }
        }
        return false
    }

    /// HMAC-SHA256 of `text` under the base64 `key`, base64-encoded.
    public static func sign(_ text: String, key: String) throws(IoTHubError) -> String {
        Data(try signatureBytes(text, key: key)).base64EncodedString()
    }

    private static func signatureBytes(_ text: String, key: String) throws(IoTHubError) -> [UInt8] {
        guard let keyBytes = Data(base64Encoded: key), !keyBytes.isEmpty else {
            throw .valueError(field: "SharedAccessKey", reason: "is not a base64-encoded key")
        }
        guard let mac = HMACSHA256.authenticationCode(key: Array(keyBytes), message: text.utf8) else {
            throw .clientError("OpenSSL could not compute HMAC-SHA256")
        }
        return mac
    }
}

extension SASToken: CustomStringConvertible {
    /// The token with its signature hidden, safe to log.
    public var description: String {
        var text = "SharedAccessSignature sr=\(encodedResourceURI)&sig=<redacted>&se=\(expiry)"
        if let keyName { text += "&skn=\(keyName)" }
        return text
    }
}
