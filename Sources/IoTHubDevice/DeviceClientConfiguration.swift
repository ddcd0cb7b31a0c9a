public import IoTHubProtocol

/// The options of a device client, with the defaults of Microsoft's Python SDK
/// (`azure-iot-device` 2.x), whose keyword names are given in each property's documentation.
public struct DeviceClientConfiguration: Sendable {
    /// `server_verification_cert`: PEM of the CAs to trust (a gateway's, a private hub's or the
    /// local hub's CA). As in the Python SDK they replace the system's CAs: a device pinned to
    /// a private CA trusts only that CA. Without it, the system's CAs are trusted.
    public var serverVerificationCertificate: String?
    /// Trust the system's CAs as well as ``serverVerificationCertificate`` (not in the Python
    /// SDK, which has only the replacing behaviour). Off by default.
    public var serverVerificationCertificateAddsToSystemStore: Bool
    /// `gateway_hostname`: connect to this host instead of the hub (IoT Edge, a local hub). SAS
    /// tokens and the MQTT user name keep the hub's host name.
    public var gatewayHostName: String?
    /// `cipher`: the suites every connection may use, as an OpenSSL cipher list
    /// (`"ECDHE-RSA-AES128-GCM-SHA256:…"`) that may also name TLS 1.3 suites
    /// (`"…:TLS_AES_256_GCM_SHA384"`). A list without TLS 1.3 suites keeps connections at
    /// TLS 1.2; a list of TLS 1.3 suites alone asks for TLS 1.3. Applied to MQTT, WebSockets,
    /// proxies and file upload alike.
    public var cipher: String?
    /// `product_info`: appended to the user agent, or sent as the Plug and Play model id when
    /// it starts with `dtmi:` (how the Python SDK's Plug and Play samples announce theirs).
    public var productInfo: String
    /// The IoT Plug and Play model id (a DTMI, `dtmi:com:example:Thermostat;1`) announced in
    /// the MQTT CONNECT (`model-id=` in the user name). The Python SDK carries it in
    /// ``productInfo``; here it has a property of its own, so that product info can still name
    /// the application. Not both: a `dtmi:` product info and a model id are refused.
    public var modelId: String?
    /// `sastoken_ttl`: lifetime in seconds of the tokens the client signs itself.
    public var sasTokenTimeToLive: Int
    /// `keep_alive`: MQTT keep-alive in seconds (5–1740: libmosquitto's minimum, IoT Hub's maximum).
    public var keepAlive: Int
    /// `auto_connect`: operations connect first when the client is not connected.
    public var autoConnect: Bool
    /// `connection_retry`: reconnect after an unexpected drop.
    public var connectionRetry: Bool
    /// `connection_retry_interval`: pause between reconnection attempts.
    public var connectionRetryInterval: Duration
    /// `ensure_desired_properties`: after each (re)connect, fetch the twin and deliver the desired
    /// properties as a patch if their `$version` moved while disconnected.
    public var ensureDesiredProperties: Bool
    /// The MQTT port (IoT Hub: 8883).
    public var mqttPort: Int
    /// The HTTPS port for file upload (IoT Hub: 443).
    public var httpsPort: Int
    /// How many QoS 1 publishes may await their PUBACK at once; more wait in the client.
    public var maximumInflightMessages: Int
    /// Bound on waiting for the hub's answer to a CONNECT, SUBSCRIBE or twin request.
    public var operationTimeout: Duration
    /// `websockets`: MQTT over WebSockets (`wss://host:httpsPort/$iothub/websocket`) instead of
    /// MQTT over TCP port 8883, for networks that only let HTTPS out.
    public var websockets: Bool
    /// `proxy_options`: send everything (MQTT and the HTTPS of file upload) through this proxy.
    public var proxyOptions: ProxyOptions?

    public init(
        serverVerificationCertificate: String? = nil, gatewayHostName: String? = nil, cipher: String? = nil,
        productInfo: String = "", sasTokenTimeToLive: Int = 3600, keepAlive: Int = 60, autoConnect: Bool = true,
        connectionRetry: Bool = true, connectionRetryInterval: Duration = .seconds(10),
        ensureDesiredProperties: Bool = true,
        mqttPort: Int = 8883, httpsPort: Int = 443, maximumInflightMessages: Int = 100,
        operationTimeout: Duration = .seconds(60),
        websockets: Bool = false, proxyOptions: ProxyOptions? = nil,
        serverVerificationCertificateAddsToSystemStore: Bool = false, modelId: String? = nil
    ) {
        self.modelId = modelId
        self.serverVerificationCertificateAddsToSystemStore = serverVerificationCertificateAddsToSystemStore
        self.serverVerificationCertificate = serverVerificationCertificate
        self.gatewayHostName = gatewayHostName
        self.cipher = cipher
        self.productInfo = productInfo
        self.sasTokenTimeToLive = sasTokenTimeToLive
        self.keepAlive = keepAlive
        self.autoConnect = autoConnect
        self.connectionRetry = connectionRetry
        self.connectionRetryInterval = connectionRetryInterval
        self.ensureDesiredProperties = ensureDesiredProperties
        self.mqttPort = mqttPort
        self.httpsPort = httpsPort
        self.maximumInflightMessages = maximumInflightMessages
        self.operationTimeout = operationTimeout
        self.websockets = websockets
        self.proxyOptions = proxyOptions
    }

    /// `cipher` given as a list, as the Python SDK also accepts.
    public mutating func setCiphers(_ ciphers: [String]) {
        cipher = ciphers.joined(separator: ":")
    }

    /// Checks every value; the client calls it at creation.
    public func validate() throws(IoTHubError) {
        guard (5...1740).contains(keepAlive) else {
            throw .valueError(
                field: "keep_alive",
                reason: "must be from 5 (the MQTT library's minimum) to 1740 seconds (IoT Hub's maximum)")
        }
        guard sasTokenTimeToLive > 0 else {
            throw .valueError(field: "sastoken_ttl", reason: "must be a positive number of seconds")
        }
        guard connectionRetryInterval > .zero else {
            throw .valueError(field: "connection_retry_interval", reason: "must be positive")
        }
        for (name, port) in [("mqtt port", mqttPort), ("https port", httpsPort)] where !(1...65535).contains(port) {
            throw .valueError(field: name, reason: "must be from 1 to 65535")
        }
        guard (1...65535).contains(maximumInflightMessages) else {
            throw .valueError(field: "maximum in-flight messages", reason: "must be from 1 to 65535")
        }
        if let gatewayHostName, gatewayHostName.isEmpty || gatewayHostName.contains("/") {
            throw .valueError(field: "gateway_hostname", reason: "is not a host name")
        }
        guard operationTimeout > .zero else {
            throw .valueError(field: "operation timeout", reason: "must be positive")
        }
        try proxyOptions?.validate()
        if let cipher, !cipher.isEmpty {
            _ = try CipherSelection(cipher)
        }
        if let modelId {
            try PlugAndPlay.validateModelId(modelId, field: "model_id")
            guard !productInfo.hasPrefix(MQTTIdentity.modelIdPrefix) else {
                throw .valueError(
                    field: "model_id",
                    reason: "and a product_info starting with 'dtmi:' both announce a model id; give only one")
            }
        }
    }

    /// The model id announced when connecting: ``modelId``, else a `dtmi:` ``productInfo``.
    public var announcedModelId: String? {
        modelId ?? (productInfo.hasPrefix(MQTTIdentity.modelIdPrefix) ? productInfo : nil)
    }
}
