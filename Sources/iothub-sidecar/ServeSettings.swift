import FoundationEssentials
import Glibc
import IoTHubDevice
import IoTHubProtocol
import Logging
import Sidecar

/// The command's options resolved against the environment, checked, with files read.
struct ServeSettings {
    var listen: ListenAddress
    /// The listening socket systemd passed (socket activation), served instead of binding `listen`.
    var inheritedListener: CInt?
    /// `--listen-mode` and `--listen-group` of a unix socket.
    var listenMode: UInt32?
    var listenGroup: UInt32?
    var apiToken: String?
    /// Seconds a request body may pause.
    var requestBodyTimeout: Int
    var clientConfiguration: DeviceClientConfiguration
    var identity: Identity
    var logLevel: Logger.Level
    /// The state directory (`--state-dir`).
    var stateDirectory: String
    /// How `POST /messages` answers without `Prefer: respond-async`.
    var telemetryDelivery: TelemetryDeliveryMode
    /// The outbox's bounds; its directory is set once the state directory is locked.
    var outbox: OutboxConfiguration
    /// Whether the sidecar reads the twin after every (re)connect (`ensure_desired_properties`).
    var ensureDesiredProperties: Bool

    /// Which credential the sidecar connects with.
    enum Identity {
        case connectionString(String)
        case sasToken(String)
        case symmetricKey(key: String, hostName: String, deviceId: String, moduleId: String?)
        case x509(X509Credential, hostName: String, deviceId: String, moduleId: String?)
        /// A connection string with `x509=true`, and the certificate it needs.
        case connectionStringWithX509(String, X509Credential)
        case localHub
        /// Registered through the Device Provisioning Service (`--dps-id-scope`).
        case provisioned(ProvisioningSettings)
        /// An IoT Edge module, from the runtime's `IOTEDGE_*` variables (`--edge-environment`).
        case edgeEnvironment([String: String])

        func makeClient(configuration: DeviceClientConfiguration) async throws -> IoTHubDeviceClient {
            let logger = Logger(label: "iothub-device")
            switch self {
            case .connectionString(let text):
                return try IoTHubDeviceClient.fromConnectionString(text, configuration: configuration, logger: logger)
            case .sasToken(let text):
                return try IoTHubDeviceClient.fromSASToken(text, configuration: configuration, logger: logger)
            case .symmetricKey(let key, let hostName, let deviceId, let moduleId):
                return try IoTHubDeviceClient.fromSymmetricKey(
                    key, hostName: hostName, deviceId: deviceId, moduleId: moduleId, configuration: configuration,
                    logger: logger)
            case .x509(let credential, let hostName, let deviceId, let moduleId):
                return try IoTHubDeviceClient.fromX509Certificate(
                    credential, hostName: hostName, deviceId: deviceId, moduleId: moduleId,
                    configuration: configuration, logger: logger)
            case .connectionStringWithX509(let text, let credential):
                return try IoTHubDeviceClient.fromConnectionString(
                    text, x509: credential, configuration: configuration, logger: logger)
            case .localHub:
                throw CommandFailure("the local hub identity is made by the serve command")
            case .provisioned:
                throw CommandFailure("a provisioned identity is made by the serve command once DPS assigned it")
            case .edgeEnvironment(let environment):
                return try await IoTHubDeviceClient.fromEdgeEnvironment(
                    environment: environment, configuration: configuration, logger: logger)
            }
        }
    }

    init(command: ServeCommand, environment: [String: String]) throws {
        let options = OptionReader(environment: environment)
        (listen, inheritedListener, apiToken) = try Self.listener(command, options)
        (listenMode, listenGroup) = try Self.socketPermissions(
            command, options, listen: listen, activated: inheritedListener != nil)
        // Hummingbird's idle timeout (60 s) ends a request that makes no progress anyway.
        requestBodyTimeout =
            try options.integer(command.requestBodyTimeout, "IOTHUB_SIDECAR_REQUEST_BODY_TIMEOUT") ?? 30
        guard (1...60).contains(requestBodyTimeout) else {
            throw CommandFailure("--request-body-timeout must be 1 to 60 seconds, not \(requestBodyTimeout)")
        }
        let levelText = options.value(command.logLevel, "IOTHUB_SIDECAR_LOG_LEVEL") ?? "info"
        guard let level = Logger.Level(rawValue: levelText) else {
            throw CommandFailure(
                "the log level must be one of trace, debug, info, notice, warning, error, critical, not '\(levelText)'")
        }
        logLevel = level
        clientConfiguration = try Self.clientConfiguration(command, options)
        ensureDesiredProperties =
            try options.boolean(command.ensureDesiredProperties, "IOTHUB_ENSURE_DESIRED_PROPERTIES") ?? true
        identity = try Self.identity(command, options)
        stateDirectory =
            options.value(command.stateDirectory, "IOTHUB_SIDECAR_STATE_DIR")
            // A local hub's device is not a real one: its outbox stays with the local hub's data.
            ?? (command.localHub
                ? command.localHubDataDirectory + "/sidecar-state"
                : StateDirectory.defaultPath(environment: environment))
        (telemetryDelivery, outbox) = try Self.storeAndForward(command, options, directory: stateDirectory + "/outbox")
    }

    /// The delivery mode and the outbox's bounds.
    private static func storeAndForward(
        _ command: ServeCommand, _ options: OptionReader, directory: String
    ) throws -> (TelemetryDeliveryMode, OutboxConfiguration) {
        let deliveryText =
            options.value(command.telemetryDelivery, "IOTHUB_SIDECAR_TELEMETRY_DELIVERY")
            ?? TelemetryDeliveryMode.sync.rawValue
        guard let delivery = TelemetryDeliveryMode(rawValue: deliveryText.lowercased()) else {
            throw CommandFailure("--telemetry-delivery must be sync or async, not '\(deliveryText)'")
        }
        var outbox = OutboxConfiguration(directory: directory)
        if let bytes = try options.integer(command.outboxMaximumBytes, "IOTHUB_SIDECAR_OUTBOX_MAX_BYTES") {
            guard bytes > 0 else {
                throw CommandFailure("--outbox-max-bytes must be a positive number of bytes, not \(bytes)")
            }
            outbox.maximumBytes = bytes
        }
        if let policyText = options.value(command.outboxWhenFull, "IOTHUB_SIDECAR_OUTBOX_WHEN_FULL") {
            guard let policy = OutboxConfiguration.WhenFull(rawValue: policyText.lowercased()) else {
                throw CommandFailure("--outbox-when-full must be reject-new or drop-oldest, not '\(policyText)'")
            }
            outbox.whenFull = policy
        }
        if let seconds = try options.integer(command.outboxTimeToLive, "IOTHUB_SIDECAR_OUTBOX_TTL") {
            guard seconds > 0 else {
                throw CommandFailure("--outbox-ttl must be a positive number of seconds, not \(seconds)")
            }
            outbox.timeToLive = .seconds(seconds)
        }
        if let rate = try options.integer(command.outboxDrainRate, "IOTHUB_SIDECAR_OUTBOX_DRAIN_RATE") {
            guard rate >= 0 else {
                throw CommandFailure(
                    "--outbox-drain-rate must be 0 (no limit) or more messages per second, not \(rate)")
            }
            outbox.drainRate = rate == 0 ? nil : rate
        }
        return (delivery, outbox)
    }

    /// Where to listen, and the API token: an address other machines can reach needs one, or
    /// the explicit choice to go without.
    /// A socket passed by systemd wins over `--listen`.
    private static func listener(_ command: ServeCommand, _ options: OptionReader) throws -> (
        ListenAddress, CInt?, String?
    ) {
        let activated = try SocketActivation.listener(environment: options.environment)
        let listen =
            try activated?.address
            ?? ListenAddress(parsing: options.value(command.listen, "IOTHUB_SIDECAR_LISTEN") ?? "127.0.0.1:8080")
        var apiToken: String?
        if let file = options.value(command.apiTokenFile, "IOTHUB_SIDECAR_API_TOKEN_FILE") {
            let token = try SecretFile.read(file, what: "the API token").trimmingWhitespaceAndNewlines()
            guard !token.isEmpty else { throw CommandFailure("the API token file \(file) is empty") }
            apiToken = token
        }
        let allowUnauthenticated =
            try options.boolean(command.allowUnauthenticated ? true : nil, "IOTHUB_SIDECAR_ALLOW_UNAUTHENTICATED")
            ?? false
        if apiToken == nil, !allowUnauthenticated, !listen.isLoopbackOnly {
            throw CommandFailure(
                "\(listen) can be reached from other machines, and without an API token whoever reaches it acts as the device: give --api-token-file (IOTHUB_SIDECAR_API_TOKEN_FILE), or accept that with --allow-unauthenticated (IOTHUB_SIDECAR_ALLOW_UNAUTHENTICATED=true)"
            )
        }
        return (listen, activated?.descriptor, apiToken)
    }

    /// `--listen-mode` (octal) and `--listen-group` (name or number), for a unix socket the
    /// sidecar binds itself.
    private static func socketPermissions(
        _ command: ServeCommand, _ options: OptionReader, listen: ListenAddress, activated: Bool
    ) throws -> (UInt32?, UInt32?) {
        let modeText = options.value(command.listenMode, "IOTHUB_SIDECAR_LISTEN_MODE")
        let groupText = options.value(command.listenGroup, "IOTHUB_SIDECAR_LISTEN_GROUP")
        guard modeText != nil || groupText != nil else { return (nil, nil) }
        if activated {
            throw CommandFailure(
                "--listen-mode and --listen-group do not apply to a socket passed by systemd (LISTEN_FDS): set SocketMode= and SocketGroup= in the socket unit"
            )
        }
        guard case .unix = listen else {
            throw CommandFailure(
                "--listen-mode and --listen-group apply to a unix socket (--listen unix:/path/to.sock), not to \(listen)"
            )
        }
        var mode: UInt32?
        if let modeText {
            guard let value = UInt32(modeText, radix: 8), value <= 0o777 else {
                throw CommandFailure(
                    "--listen-mode must be permission bits in octal, 0 to 0777 (such as 0660), not '\(modeText)'")
            }
            mode = value
        }
        var group: UInt32?
        if let groupText {
            if let number = UInt32(groupText) {
                group = number
            } else if let entry = getgrnam(groupText) {
                group = entry.pointee.gr_gid
            } else {
                throw CommandFailure("--listen-group: there is no group '\(groupText)' on this machine")
            }
        }
        return (mode, group)
    }

    /// The device client's options (azure-iot-device (Python)'s keyword arguments).
    private static func clientConfiguration(_ command: ServeCommand, _ options: OptionReader) throws
        -> DeviceClientConfiguration
    {
        var configuration = DeviceClientConfiguration()
        if let file = options.value(command.serverVerificationCertificateFile, "IOTHUB_SERVER_VERIFICATION_CERT") {
            configuration.serverVerificationCertificate = try SecretFile.read(
                file, what: "the server verification certificate")
        }
        configuration.serverVerificationCertificateAddsToSystemStore =
            try options.boolean(
                command.serverVerificationCertificateAddsToSystemStore ? true : nil,
                "IOTHUB_SERVER_VERIFICATION_CERT_ADDS_TO_SYSTEM_STORE") ?? false
        configuration.gatewayHostName = options.value(command.gatewayHostName, "IOTHUB_GATEWAY_HOSTNAME")
        configuration.cipher = options.value(command.cipher, "IOTHUB_CIPHER")
        if let info = options.value(command.productInfo, "IOTHUB_PRODUCT_INFO") { configuration.productInfo = info }
        configuration.modelId = options.value(command.modelId, "IOTHUB_MODEL_ID")
        if let ttl = try options.integer(command.sasTokenTimeToLive, "IOTHUB_SASTOKEN_TTL") {
            configuration.sasTokenTimeToLive = ttl
        }
        if let keepAlive = try options.integer(command.keepAlive, "IOTHUB_KEEP_ALIVE") {
            configuration.keepAlive = keepAlive
        }
        if let auto = try options.boolean(command.autoConnect, "IOTHUB_AUTO_CONNECT") {
            configuration.autoConnect = auto
        }
        if let retry = try options.boolean(command.connectionRetry, "IOTHUB_CONNECTION_RETRY") {
            configuration.connectionRetry = retry
        }
        if let interval = try options.integer(command.connectionRetryInterval, "IOTHUB_CONNECTION_RETRY_INTERVAL") {
            configuration.connectionRetryInterval = .seconds(interval)
        }
        if let port = try options.integer(command.mqttPort, "IOTHUB_MQTT_PORT") { configuration.mqttPort = port }
        if let port = try options.integer(command.httpsPort, "IOTHUB_HTTPS_PORT") { configuration.httpsPort = port }
        if let count = try options.integer(command.maximumInflightMessages, "IOTHUB_MAX_INFLIGHT") {
            configuration.maximumInflightMessages = count
        }
        if let seconds = try options.integer(command.operationTimeout, "IOTHUB_OPERATION_TIMEOUT") {
            configuration.operationTimeout = .seconds(seconds)
        }
        if let websockets = try options.boolean(command.websockets, "IOTHUB_WEBSOCKETS") {
            configuration.websockets = websockets
        }
        if let url = options.value(command.proxy, "IOTHUB_PROXY") {
            var proxy = try ProxyOptions(url: url)
            if command.proxy != nil, proxy.password != nil {
                throw CommandFailure(
                    "--proxy must not carry a password: put it in --proxy-password-file or IOTHUB_PROXY_PASSWORD")
            }
            if let file = command.proxyPasswordFile {
                proxy.password = try SecretFile.read(file, what: "the proxy password").trimmingNewlines()
            } else if let password = options.environment["IOTHUB_PROXY_PASSWORD"], !password.isEmpty {
                proxy.password = password
            }
            if proxy.password != nil, proxy.username == nil {
                throw CommandFailure(
                    "a proxy password needs a user name in the proxy URL (\(proxy.kind.rawValue)://user@host:port)")
            }
            configuration.proxyOptions = proxy
        } else if command.proxyPasswordFile != nil {
            throw CommandFailure("--proxy-password-file needs --proxy")
        }
        // The sidecar reads the twin after every (re)connect itself (GET /twin/desired), unless
        // --ensure-desired-properties false.
        configuration.ensureDesiredProperties = false
        try configuration.validate()
        return configuration
    }

    /// The one credential given.
    private static func identity(_ command: ServeCommand, _ options: OptionReader) throws -> Identity {
        if let idScope = options.value(command.dpsIdScope, "IOTHUB_DPS_ID_SCOPE") {
            return .provisioned(try provisioning(idScope: idScope, command, options))
        }
        for (flag, given) in [
            ("--registration-id", options.value(command.registrationId, "IOTHUB_DPS_REGISTRATION_ID")),
            ("--group-key-file", command.groupKeyFile),
            ("--dps-payload-file", options.value(command.dpsPayloadFile, "IOTHUB_DPS_PAYLOAD_FILE")),
        ]
        where given != nil {
            throw CommandFailure("\(flag) needs --dps-id-scope (IOTHUB_DPS_ID_SCOPE)")
        }
        let hostName = options.value(command.hostName, "IOTHUB_HOSTNAME")
        let deviceId = options.value(command.deviceId, "IOTHUB_DEVICE_ID")
        let moduleId = options.value(command.moduleId, "IOTHUB_MODULE_ID")
        var candidates: [Identity] = []
        if command.localHub { candidates.append(.localHub) }
        let edgeRequested =
            try options.boolean(command.edgeEnvironment ? true : nil, "IOTHUB_EDGE_ENVIRONMENT") ?? false
        if edgeRequested { candidates.append(.edgeEnvironment(options.environment)) }
        if let file = command.connectionStringFile {
            candidates.append(
                .connectionString(
                    try SecretFile.read(file, what: "the connection string").trimmingWhitespaceAndNewlines()))
        } else if let text = options.environment["IOTHUB_DEVICE_CONNECTION_STRING"], !text.isEmpty, !command.localHub {
            candidates.append(.connectionString(text.trimmingWhitespaceAndNewlines()))
        }
        if let file = command.sasTokenFile {
            candidates.append(
                .sasToken(
                    try SecretFile.read(file, what: "the SAS token").trimmingWhitespaceAndNewlines()))
        } else if let text = options.environment["IOTHUB_DEVICE_SAS_TOKEN"], !text.isEmpty, !command.localHub {
            candidates.append(.sasToken(text.trimmingWhitespaceAndNewlines()))
        }
        func named() throws -> (String, String) {
            guard let hostName, let deviceId else {
                throw CommandFailure(
                    "a key or a certificate needs --hostname and --device-id (or IOTHUB_HOSTNAME and IOTHUB_DEVICE_ID)")
            }
            return (hostName, deviceId)
        }
        let keyText =
            try command.keyFile.map { try SecretFile.read($0, what: "the shared access key") }
            ?? (command.localHub ? nil : options.environment["IOTHUB_DEVICE_KEY"])
        if let keyText, !keyText.isEmpty {
            let (host, device) = try named()
            candidates.append(
                .symmetricKey(
                    key: keyText.trimmingWhitespaceAndNewlines(), hostName: host, deviceId: device,
                    moduleId: moduleId))
        }
        if let certificateFile = options.value(command.x509CertificateFile, "IOTHUB_DEVICE_X509_CERT_FILE") {
            guard let keyFile = options.value(command.x509KeyFile, "IOTHUB_DEVICE_X509_KEY_FILE") else {
                throw CommandFailure("--x509-cert-file needs --x509-key-file")
            }
            let passPhrase = try options.value(command.x509PassPhraseFile, "IOTHUB_DEVICE_X509_PASS_PHRASE_FILE").map {
                try SecretFile.read($0, what: "the pass phrase").trimmingNewlines()
            }
            let credential = X509Credential(
                certificatePEM: try SecretFile.read(certificateFile, what: "the certificate"),
                privateKeyPEM: try SecretFile.read(keyFile, what: "the private key"),
                passPhrase: passPhrase)
            if let index = candidates.firstIndex(where: { if case .connectionString = $0 { true } else { false } }),
                case .connectionString(let text) = candidates[index]
            {
                // A connection string with x509=true names the identity; the files give the certificate.
                candidates[index] = .connectionStringWithX509(text, credential)
            } else {
                let (host, device) = try named()
                candidates.append(.x509(credential, hostName: host, deviceId: device, moduleId: moduleId))
            }
        }
        // Inside an IoT Edge module's container, with no other credential, the runtime's
        // variables are the identity (as IoTHubModuleClient.create_from_edge_environment).
        if candidates.isEmpty, options.value(nil, "IOTEDGE_WORKLOADURI") != nil {
            candidates.append(.edgeEnvironment(options.environment))
        }
        guard candidates.count == 1, let identity = candidates.first else {
            throw CommandFailure(
                candidates.isEmpty
                    ? "no credentials: set IOTHUB_DEVICE_CONNECTION_STRING, or pass --connection-string-file, --sas-token-file, --key-file or --x509-cert-file, or use --local-hub (see --help)"
                    : "give exactly one credential (connection string, SAS token, key, certificate, --edge-environment or --local-hub); \(candidates.count) were given"
            )
        }
        return identity
    }
}

extension ServeSettings {
    /// Provisioning through DPS: an ID scope, a registration id and one credential (the
    /// device's key, the enrollment group's key, or a certificate); no hub, device or module.
    fileprivate static func provisioning(idScope: String, _ command: ServeCommand, _ options: OptionReader) throws
        -> ProvisioningSettings
    {
        guard let registrationId = options.value(command.registrationId, "IOTHUB_DPS_REGISTRATION_ID") else {
            throw CommandFailure("--dps-id-scope needs --registration-id (IOTHUB_DPS_REGISTRATION_ID)")
        }
        if command.localHub {
            throw CommandFailure(
                "--dps-id-scope and --local-hub exclude each other: give --dps-host to register with a local hub's DPS")
        }
        if options.value(command.moduleId, "IOTHUB_MODULE_ID") != nil {
            throw CommandFailure("DPS provisions devices, not modules: --module-id cannot be used with --dps-id-scope")
        }
        for (flag, given) in [
            ("--hostname", options.value(command.hostName, "IOTHUB_HOSTNAME")),
            ("--device-id", options.value(command.deviceId, "IOTHUB_DEVICE_ID")),
            (
                "--connection-string-file",
                command.connectionStringFile ?? options.value(nil, "IOTHUB_DEVICE_CONNECTION_STRING")
            ),
            ("--sas-token-file", command.sasTokenFile ?? options.value(nil, "IOTHUB_DEVICE_SAS_TOKEN")),
        ] where given != nil {
            throw CommandFailure("\(flag) cannot be used with --dps-id-scope: DPS assigns the hub and the device id")
        }
        var credentials: [DeviceCredential] = []
        if let key = try command.keyFile.map({ try SecretFile.read($0, what: "the shared access key") })
            ?? options.value(nil, "IOTHUB_DEVICE_KEY")
        {
            credentials.append(.symmetricKey(key.trimmingWhitespaceAndNewlines()))
        }
        if let groupKey = try command.groupKeyFile.map({ try SecretFile.read($0, what: "the enrollment group key") })
            ?? options.value(nil, "IOTHUB_DPS_GROUP_KEY")
        {
            do {
                credentials.append(
                    .symmetricKey(
                        try ProvisioningDeviceClient.deriveDeviceKey(
                            groupKey: groupKey.trimmingWhitespaceAndNewlines(),
                            registrationId: registrationId)))
            } catch {
                throw CommandFailure("the enrollment group key is not a base64-encoded key")
            }
        }
        if let certificateFile = options.value(command.x509CertificateFile, "IOTHUB_DEVICE_X509_CERT_FILE") {
            guard let keyFile = options.value(command.x509KeyFile, "IOTHUB_DEVICE_X509_KEY_FILE") else {
                throw CommandFailure("--x509-cert-file needs --x509-key-file")
            }
            let passPhrase = try options.value(command.x509PassPhraseFile, "IOTHUB_DEVICE_X509_PASS_PHRASE_FILE").map {
                try SecretFile.read($0, what: "the pass phrase").trimmingNewlines()
            }
            credentials.append(
                .x509(
                    X509Credential(
                        certificatePEM: try SecretFile.read(certificateFile, what: "the certificate"),
                        privateKeyPEM: try SecretFile.read(keyFile, what: "the private key"), passPhrase: passPhrase)))
        }
        guard credentials.count == 1, let credential = credentials.first else {
            throw CommandFailure(
                "--dps-id-scope needs exactly one credential: --key-file (an individual enrollment's key), --group-key-file (an enrollment group's key) or --x509-cert-file with --x509-key-file; \(credentials.count) were given"
            )
        }
        var payload: JSONValue?
        if let file = options.value(command.dpsPayloadFile, "IOTHUB_DPS_PAYLOAD_FILE") {
            do {
                payload = try JSONValue(parsing: Data(try SecretFile.read(file, what: "the DPS payload").utf8))
            } catch let error as IoTHubError {
                throw CommandFailure("the DPS payload in \(file) is not JSON: \(error)")
            }
        }
        return ProvisioningSettings(
            idScope: idScope, registrationId: registrationId,
            host: options.value(command.dpsHost, "IOTHUB_DPS_HOST") ?? ProvisioningDeviceClient.globalEndpoint,
            credential: credential, payload: payload)
    }
}

/// Reads an option from its flag, else from its environment variable (empty counts as unset).
struct OptionReader {
    let environment: [String: String]

    func value(_ flag: String?, _ variable: String) -> String? {
        flag ?? environment[variable].flatMap { $0.isEmpty ? nil : $0 }
    }

    func integer(_ flag: Int?, _ variable: String) throws -> Int? {
        if let flag { return flag }
        guard let text = value(nil, variable) else { return nil }
        guard let number = Int(text) else { throw CommandFailure("\(variable) must be a whole number, not '\(text)'") }
        return number
    }

    func boolean(_ flag: Bool?, _ variable: String) throws -> Bool? {
        if let flag { return flag }
        guard let text = value(nil, variable)?.lowercased() else { return nil }
        switch text {
        case "true", "1", "yes", "on": return true
        case "false", "0", "no", "off": return false
        default: throw CommandFailure("\(variable) must be true or false, not '\(text)'")
        }
    }
}
