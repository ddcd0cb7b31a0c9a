/// What a device presents in an MQTT CONNECT: client id, user name (and, separately, the SAS
/// token as password, or an X.509 certificate and no password).
///
/// The user name is `{HostName}/{clientId}/?api-version=…&DeviceClientType=…`, where only the
/// query parameters are percent-encoded, followed by `&model-id=…` for an IoT Plug and Play
/// device. The host name is always the hub's, also when the connection goes through a gateway.
public struct MQTTIdentity: Sendable, Hashable {
    /// The API version IoT Hub's MQTT endpoint is addressed with.
    public static let apiVersion = "2019-10-01"
    /// The API version used when the device announces a Plug and Play model id.
    public static let plugAndPlayAPIVersion = PlugAndPlay.apiVersion
    /// Product info starting with this prefix is a Plug and Play model id (`model-id=`).
    public static let modelIdPrefix = "dtmi:"

    public var hostName: String
    public var deviceId: String
    public var moduleId: String?
    /// The seed's `product_info`: appended to the user agent, or sent as `model-id` when it is a
    /// DTMI.
    public var productInfo: String
    /// The Plug and Play model id announced with `model-id=` (the configuration's `modelId`);
    /// ``productInfo`` is then appended to the user agent whatever it is.
    public var modelId: String?

    public init(
        hostName: String, deviceId: String, moduleId: String? = nil, productInfo: String = "", modelId: String? = nil
    ) {
        self.hostName = hostName
        self.deviceId = deviceId
        self.moduleId = moduleId
        self.productInfo = productInfo
        self.modelId = modelId
    }

    /// `deviceId`, or `deviceId/moduleId` for modules.
    public var clientId: String {
        guard let moduleId else { return deviceId }
        return "\(deviceId)/\(moduleId)"
    }

    /// The query parameters of the user name, in order.
    public var usernameParameters: [(key: String, value: String)] {
        if let modelId {
            return [
                ("api-version", Self.plugAndPlayAPIVersion),
                ("DeviceClientType", UserAgent.string + productInfo),
                (PlugAndPlay.modelIdParameter, modelId),
            ]
        }
        if productInfo.hasPrefix(Self.modelIdPrefix) {
            return [
                ("api-version", Self.plugAndPlayAPIVersion),
                ("DeviceClientType", UserAgent.string),
                (PlugAndPlay.modelIdParameter, productInfo),
            ]
        }
        return [
            ("api-version", Self.apiVersion),
            ("DeviceClientType", UserAgent.string + productInfo),
        ]
    }

    /// The MQTT user name.
    public var username: String {
        let query =
            usernameParameters
            .map { "\(PercentEncoding.encode($0.key))=\(PercentEncoding.encode($0.value))" }
            .joined(separator: "&")
        return "\(hostName)/\(clientId)/?\(query)"
    }
}

/// A user name as a hub receives it, taken apart.
public struct MQTTUsername: Sendable, Hashable {
    public var hostName: String
    /// The client id part: `deviceId` or `deviceId/moduleId`.
    public var clientId: String
    /// The decoded query parameters.
    public var parameters: [String: String]

    /// Parses `{host}/{clientId}/?{query}`; nil when the shape is wrong. The query may be empty.
    public init?(parsing username: String) {
        guard let slash = username.firstIndex(of: "/"),
            let marker = username.utf8.firstRange(of: "/?".utf8)
        else { return nil }
        let host = username[..<slash]
        let clientStart = username.index(after: slash)
        guard !host.isEmpty, clientStart < marker.lowerBound else { return nil }
        var parameters: [String: String] = [:]
        for pair in username[marker.upperBound...].split(separator: "&") {
            guard let equals = pair.firstIndex(of: "=") else { return nil }
            parameters[PercentEncoding.decode(pair[..<equals])] =
                PercentEncoding.decode(pair[pair.index(after: equals)...])
        }
        self.hostName = String(host)
        self.clientId = String(username[clientStart..<marker.lowerBound])
        self.parameters = parameters
    }
}

/// How this product names itself to the hub.
public enum UserAgent {
    /// The product's name.
    public static let product = "iothub-sidecar"
    /// The product's version.
    public static let version = "0.1.0"
    /// `iothub-sidecar/0.1.0 (Swift; Linux; x86_64)`: product, version and platform, in the
    /// shape of Microsoft's SDK user agents.
    public static let string: String = "\(product)/\(version) (Swift; \(operatingSystem); \(architecture))"

    private static var operatingSystem: String {
        #if os(Linux)
            "Linux"
        #elseif os(macOS)
            "macOS"
        #else
            "unknown"
        #endif
    }

    private static var architecture: String {
        #if arch(x86_64)
            "x86_64"
        #elseif arch(arm64)
            "aarch64"
        #else
            "unknown"
        #endif
    }
}
