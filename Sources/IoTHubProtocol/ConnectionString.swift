/// An IoT Hub connection string: `HostName=…;DeviceId=…;SharedAccessKey=…`.
///
/// Device, module and shared-access-policy (service) strings are parsed and rendered. Parsing is
/// strict, like Microsoft's SDKs: keys are case-sensitive, each may appear once, values may
/// contain `=` (base64 keys do), and every problem is reported with the key it concerns.
/// ``description`` hides keys and signatures; use ``rendered()`` where the secret is wanted.
public struct ConnectionString: Sendable, Hashable {
    /// How the identity proves who it is.
    public enum Credential: Sendable, Hashable {
        /// A shared access key (base64). The client signs its own tokens with it.
        case sharedAccessKey(String)
        /// A ready-made SAS token that the client cannot renew.
        case sharedAccessSignature(SASToken)
        /// An X.509 client certificate, supplied separately (`x509=true`).
        case x509
    }

    /// The IoT Hub host, e.g. `myhub.azure-devices.net`.
    public var hostName: String
    /// The device; nil for a shared-access-policy string.
    public var deviceId: String?
    /// The module, for module identities.
    public var moduleId: String?
    /// The policy name (`SharedAccessKeyName`), for service strings.
    public var sharedAccessKeyName: String?
    /// The credential.
    public var credential: Credential
    /// A gateway (IoT Edge, or a local hub) to open connections to instead of `hostName`.
    public var gatewayHostName: String?

    /// The connection-string keys this type understands, in the order they are rendered.
    public static let knownKeys = [
        "HostName", "DeviceId", "ModuleId", "SharedAccessKeyName", "SharedAccessKey",
        "SharedAccessSignature", "x509", "GatewayHostName",
    ]

    /// Creates a connection string from its parts; see ``init(parsing:)`` for the rules.
    public init(
        hostName: String, deviceId: String? = nil, moduleId: String? = nil,
        sharedAccessKeyName: String? = nil, credential: Credential, gatewayHostName: String? = nil
    ) {
        self.hostName = hostName
        self.deviceId = deviceId
        self.moduleId = moduleId
        self.sharedAccessKeyName = sharedAccessKeyName
        self.credential = credential
        self.gatewayHostName = gatewayHostName
    }

    /// Parses a connection string.
    ///
    /// - Throws: ``IoTHubError/valueError(field:reason:)`` naming the key that is unknown,
    ///   duplicated, empty, missing or in contradiction with another.
    public init(parsing text: String) throws(IoTHubError) {
        let trimmed = text.trimmingWhitespace()
        guard !trimmed.isEmpty else {
            throw .valueError(field: "connection string", reason: "is empty")
        }
        var values: [String: String] = [:]
        // A trailing ';' is common when strings are pasted; tolerate exactly that one.
        var segments = trimmed.split(separator: ";", omittingEmptySubsequences: false)
        if segments.count > 1, segments.last?.isEmpty == true { segments.removeLast() }
        // Errors name segments by position and keys only once they are known: a key pasted
        // into the wrong place must never be repeated back (in a terminal, a log, an HTTP answer).
        for (index, segment) in segments.enumerated() {
            let position = "segment \(index + 1) of \(segments.count)"
            guard let equals = segment.firstIndex(of: "=") else {
                throw .valueError(
                    field: "connection string",
                    reason: segment.isEmpty
                        ? "has an empty \(position) (two ';' in a row)"
                        : "has a \(position) that is not of the form Key=Value")
            }
            let key = String(segment[..<equals])
            let value = String(segment[segment.index(after: equals)...])
            guard Self.knownKeys.contains(key) else {
                let hint =
                    Self.knownKeys.first { $0.lowercased() == key.lowercased() }
                    .map { " (keys are case-sensitive: did you mean '\($0)'?)" }
                    ?? " (known keys: \(Self.knownKeys.joined(separator: ", ")))"
                throw .valueError(field: "connection string", reason: "has an unknown key in \(position)\(hint)")
            }
            guard values[key] == nil else {
                throw .valueError(field: key, reason: "is given more than once")
            }
            guard !value.isEmpty else {
                throw .valueError(field: key, reason: "has an empty value")
            }
            values[key] = value
        }

        guard let hostName = values["HostName"] else {
            throw .valueError(field: "HostName", reason: "is missing")
        }
        let key = values["SharedAccessKey"]
        let signature = values["SharedAccessSignature"]
        let x509Flag = values["x509"]
        if let x509Flag, x509Flag.lowercased() != "true" {
            throw .valueError(field: "x509", reason: "must be 'true' when present")
        }
        if key != nil, signature != nil {
            throw .valueError(
                field: "SharedAccessSignature",
                reason: "cannot be combined with SharedAccessKey; give one of them")
        }
        if x509Flag != nil, key != nil || signature != nil {
            throw .valueError(
                field: "x509",
                reason: "cannot be combined with \(key != nil ? "SharedAccessKey" : "SharedAccessSignature")")
        }
        let deviceId = values["DeviceId"]
        let moduleId = values["ModuleId"]
        let keyName = values["SharedAccessKeyName"]
        if moduleId != nil, deviceId == nil {
            throw .valueError(field: "DeviceId", reason: "is missing (ModuleId needs a DeviceId)")
        }
        if deviceId == nil {
            // A shared-access-policy (service) string.
            guard keyName != nil else {
                throw .valueError(
                    field: "DeviceId", reason: "is missing (or give SharedAccessKeyName for a policy string)")
            }
            guard key != nil else {
                throw .valueError(field: "SharedAccessKey", reason: "is missing (a policy string needs its key)")
            }
        } else if keyName != nil {
            throw .valueError(
                field: "SharedAccessKeyName",
                reason: "belongs to policy strings and cannot be combined with DeviceId")
        }

        let credential: Credential
        if let key {
            guard Self.isBase64(key) else {
                throw .valueError(field: "SharedAccessKey", reason: "is not base64")
            }
            credential = .sharedAccessKey(key)
        } else if let signature {
            let token: SASToken
            do {
                token = try SASToken(parsing: signature)
            } catch {
                throw .valueError(field: "SharedAccessSignature", reason: Self.reason(of: error))
            }
            credential = .sharedAccessSignature(token)
        } else if x509Flag != nil {
            credential = .x509
        } else {
            throw .valueError(
                field: "SharedAccessKey",
                reason: "is missing (give SharedAccessKey, SharedAccessSignature or x509=true)")
        }
        self.init(
            hostName: hostName, deviceId: deviceId, moduleId: moduleId, sharedAccessKeyName: keyName,
            credential: credential, gatewayHostName: values["GatewayHostName"])
    }

    /// The connection string text, secrets included. Write it to a file or an environment
    /// variable; never log it.
    public func rendered() -> String {
        render(revealingSecrets: true)
    }

    /// The SAS resource URI of this identity (`{HostName}/devices/{DeviceId}[/modules/{ModuleId}]`),
    /// or the host name alone for a policy string.
    public var resourceURI: String {
        guard let deviceId else { return hostName }
        return SASToken.resourceURI(hostName: hostName, deviceId: deviceId, moduleId: moduleId)
    }

    private func render(revealingSecrets: Bool) -> String {
        var parts = ["HostName=\(hostName)"]
        if let deviceId { parts.append("DeviceId=\(deviceId)") }
        if let moduleId { parts.append("ModuleId=\(moduleId)") }
        if let sharedAccessKeyName { parts.append("SharedAccessKeyName=\(sharedAccessKeyName)") }
        switch credential {
        case .sharedAccessKey(let key):
            parts.append("SharedAccessKey=\(revealingSecrets ? key : "<redacted>")")
        case .sharedAccessSignature(let token):
            parts.append("SharedAccessSignature=\(revealingSecrets ? token.string : token.description)")
        case .x509:
            parts.append("x509=true")
        }
        if let gatewayHostName { parts.append("GatewayHostName=\(gatewayHostName)") }
        return parts.joined(separator: ";")
    }

    private static func isBase64(_ text: String) -> Bool {
        guard text.utf8.count % 4 == 0 else { return false }
        var padding = 0
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "="):
                padding += 1
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "+"), UInt8(ascii: "/"):
                if padding > 0 { return false }
            default:
                return false
            }
        }
        return padding <= 2
    }

    /// The reason of a SAS token error, without the field name the token parser gives it.
    private static func reason(of error: IoTHubError) -> String {
        if case .valueError(_, let reason) = error { return reason }
        return error.description
    }
}

extension ConnectionString: CustomStringConvertible, CustomDebugStringConvertible {
    /// The connection string with its key or signature replaced by `<redacted>`.
    public var description: String { render(revealingSecrets: false) }
    /// Same as ``description``: secrets stay out of debug output too.
    public var debugDescription: String { description }
}

extension String {
    func trimmingWhitespace() -> Substring {
        let isSpace: (Character) -> Bool = { $0.isWhitespace }
        guard let start = firstIndex(where: { !isSpace($0) }),
            let end = lastIndex(where: { !isSpace($0) })
        else { return "" }
        return self[start...end]
    }
}
