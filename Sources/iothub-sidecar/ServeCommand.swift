import ArgumentParser
import CommandLineSupport
import FoundationEssentials
import Glibc
import IoTHubDevice
import IoTHubProtocol
import Logging
import ServiceLifecycle
import Sidecar

/// `iothub-sidecar serve` (the default): the device client as a local HTTP API.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Connect to IoT Hub as a device and serve its client over local HTTP (the default command).",
        discussion: """
            Every option can also be set with the environment variable shown in brackets; a \
            flag wins over the variable. Credentials come only from the environment or from \
            files, never from the command line. Give exactly one of: a connection string \
            (IOTHUB_DEVICE_CONNECTION_STRING or --connection-string-file), a SAS token \
            (IOTHUB_DEVICE_SAS_TOKEN or --sas-token-file), a shared access key (--key-file with \
            --hostname and --device-id), an X.509 certificate (--x509-cert-file and \
            --x509-key-file with --hostname and --device-id), or --local-hub; or register \
            through the Device Provisioning Service with --dps-id-scope and --registration-id \
            and one of --key-file, --group-key-file or --x509-cert-file/--x509-key-file (DPS \
            provisions devices only, not module identities).

            Quick start, with no cloud account: `iothub-sidecar serve --local-hub`, then \
            `curl -sS http://127.0.0.1:8080/status`. The API is described at /openapi.yaml.
            """
    )

    // MARK: Listener

    @Option(
        help: ArgumentHelp(
            "Where to serve HTTP: HOST:PORT or unix:/path/to.sock [IOTHUB_SIDECAR_LISTEN]. Default 127.0.0.1:8080. An address other machines can reach (not 127.x.x.x, ::1, localhost or a unix socket) needs --api-token-file or --allow-unauthenticated.",
            valueName: "address"))
    var listen: String?

    @Option(
        name: .customLong("listen-mode"),
        help: ArgumentHelp(
            "Permission bits, in octal, of the unix socket of --listen, e.g. 0660 so that --listen-group can connect; default from the umask [IOTHUB_SIDECAR_LISTEN_MODE]. Under systemd socket activation (LISTEN_FDS) the socket unit's SocketMode= and SocketGroup= decide instead.",
            valueName: "mode"))
    var listenMode: String?

    @Option(
        name: .customLong("listen-group"),
        help: ArgumentHelp(
            "Group (name or number) given the unix socket of --listen, e.g. the group of the application's user [IOTHUB_SIDECAR_LISTEN_GROUP].",
            valueName: "group"))
    var listenGroup: String?

    @Option(
        name: .customLong("api-token-file"),
        help: ArgumentHelp(
            "File holding a token every request must send as 'Authorization: Bearer <token>' (/healthz and /readyz exempt) [IOTHUB_SIDECAR_API_TOKEN_FILE].",
            valueName: "file"))
    var apiTokenFile: String?

    @Flag(
        name: .customLong("allow-unauthenticated"),
        help: ArgumentHelp(
            "Serve on an address other machines can reach without an API token: whoever reaches it acts as the device [IOTHUB_SIDECAR_ALLOW_UNAUTHENTICATED=true]."
        ))
    var allowUnauthenticated = false
    @Option(
        name: .customLong("request-body-timeout"),
        help: ArgumentHelp(
            "Seconds, 1 to 60, a request body may pause without a byte before the request is answered 408 and its connection closed; default 30 [IOTHUB_SIDECAR_REQUEST_BODY_TIMEOUT].",
            valueName: "seconds"))
    var requestBodyTimeout: Int?

    // MARK: Identity

    @Option(
        name: .customLong("connection-string-file"),
        help: ArgumentHelp(
            "File with the device or module connection string ('-' reads standard input) [IOTHUB_DEVICE_CONNECTION_STRING holds the string itself].",
            valueName: "file"))
    var connectionStringFile: String?

    @Option(
        name: .customLong("sas-token-file"),
        help: ArgumentHelp(
            "File with a SAS token to connect with; renew it with PUT /sastoken [IOTHUB_DEVICE_SAS_TOKEN holds the token itself].",
            valueName: "file"))
    var sasTokenFile: String?

    @Option(
        name: .customLong("key-file"),
        help: ArgumentHelp(
            "File with the device's shared access key (base64), used with --hostname and --device-id [IOTHUB_DEVICE_KEY holds the key itself].",
            valueName: "file"))
    var keyFile: String?

    @Option(
        name: .customLong("x509-cert-file"),
        help: ArgumentHelp(
            "PEM file with the device certificate (and chain), used with --x509-key-file, and either --hostname and --device-id or a connection string with x509=true [IOTHUB_DEVICE_X509_CERT_FILE].",
            valueName: "file"))
    var x509CertificateFile: String?

    @Option(
        name: .customLong("x509-key-file"),
        help: ArgumentHelp(
            "PEM file with the certificate's private key [IOTHUB_DEVICE_X509_KEY_FILE].", valueName: "file"))
    var x509KeyFile: String?

    @Option(
        name: .customLong("x509-pass-phrase-file"),
        help: ArgumentHelp(
            "File with the pass phrase of an encrypted private key [IOTHUB_DEVICE_X509_PASS_PHRASE_FILE].",
            valueName: "file"))
    var x509PassPhraseFile: String?

    @Option(
        name: .customLong("hostname"),
        help: ArgumentHelp(
            "The hub's host name, such as myhub.azure-devices.net, with --key-file or an X.509 certificate [IOTHUB_HOSTNAME].",
            valueName: "name"))
    var hostName: String?

    @Option(
        name: .customLong("device-id"),
        help: ArgumentHelp(
            "The device id, with --key-file or an X.509 certificate [IOTHUB_DEVICE_ID].", valueName: "id"))
    var deviceId: String?

    @Option(
        name: .customLong("module-id"),
        help: ArgumentHelp(
            "Act as this module of the device, with --key-file or an X.509 certificate [IOTHUB_MODULE_ID].",
            valueName: "id"))
    var moduleId: String?

    // MARK: Device Provisioning Service

    @Option(
        name: .customLong("dps-id-scope"),
        help: ArgumentHelp(
            "Register through the Device Provisioning Service with this ID scope, which assigns the hub and device id; the assignment is cached in the state directory (provisioning.json) and renewed when the hub refuses it. Devices only: module identities are not provisioned by DPS [IOTHUB_DPS_ID_SCOPE].",
            valueName: "scope"))
    var dpsIdScope: String?

    @Option(
        name: .customLong("registration-id"),
        help: ArgumentHelp(
            "The registration id at DPS, with --dps-id-scope [IOTHUB_DPS_REGISTRATION_ID].", valueName: "id"))
    var registrationId: String?

    @Option(
        name: .customLong("group-key-file"),
        help: ArgumentHelp(
            "File with an enrollment group's symmetric key (base64), from which the device's key is derived, with --dps-id-scope [IOTHUB_DPS_GROUP_KEY holds the key itself]. An individual enrollment's key goes in --key-file.",
            valueName: "file"))
    var groupKeyFile: String?

    @Option(
        name: .customLong("dps-host"),
        help: ArgumentHelp(
            "The DPS host; default global.azure-devices-provisioning.net. Reached on the MQTT port (or the HTTPS port with --websockets) [IOTHUB_DPS_HOST].",
            valueName: "name"))
    var dpsHost: String?

    @Option(
        name: .customLong("dps-payload-file"),
        help: ArgumentHelp(
            "File with a JSON payload sent with each registration (provisioning_payload) [IOTHUB_DPS_PAYLOAD_FILE].",
            valueName: "file"))
    var dpsPayloadFile: String?

    // MARK: Client options (the Python SDK's keyword arguments)

    @Option(
        name: .customLong("server-verification-cert"),
        help: ArgumentHelp(
            "PEM file of the CAs to trust instead of the system's, e.g. a gateway's (server_verification_cert) [IOTHUB_SERVER_VERIFICATION_CERT].",
            valueName: "file"))
    var serverVerificationCertificateFile: String?

    @Flag(
        name: .customLong("server-verification-cert-adds-to-system-store"),
        help: ArgumentHelp(
            "Trust the system's CAs as well as those of --server-verification-cert, which otherwise replace them [IOTHUB_SERVER_VERIFICATION_CERT_ADDS_TO_SYSTEM_STORE=true]."
        ))
    var serverVerificationCertificateAddsToSystemStore = false

    @Option(
        name: .customLong("gateway-hostname"),
        help: ArgumentHelp(
            "Connect to this host instead of the hub, e.g. an IoT Edge gateway (gateway_hostname) [IOTHUB_GATEWAY_HOSTNAME].",
            valueName: "name"))
    var gatewayHostName: String?

    @Option(
        help: ArgumentHelp(
            "Suites every connection may use (cipher), colon-separated, OpenSSL names; TLS_… names allow TLS 1.3, without them TLS 1.2 only [IOTHUB_CIPHER].",
            valueName: "list"))
    var cipher: String?

    @Option(
        name: .customLong("product-info"),
        help: ArgumentHelp(
            "Text added to the user agent; a 'dtmi:' value is sent as the Plug and Play model id (product_info) [IOTHUB_PRODUCT_INFO].",
            valueName: "text"))
    var productInfo: String?

    @Option(
        name: .customLong("model-id"),
        help: ArgumentHelp(
            "IoT Plug and Play model id (a DTMI, 'dtmi:com:example:Thermostat;1') announced when connecting [IOTHUB_MODEL_ID].",
            valueName: "dtmi"))
    var modelId: String?

    @Option(
        name: .customLong("sastoken-ttl"),
        help: ArgumentHelp(
            "Lifetime in seconds of the SAS tokens signed with a key; default 3600 (sastoken_ttl) [IOTHUB_SASTOKEN_TTL].",
            valueName: "seconds"))
    var sasTokenTimeToLive: Int?

    @Option(
        name: .customLong("keep-alive"),
        help: ArgumentHelp(
            "MQTT keep-alive in seconds, 5 to 1740; default 60 (keep_alive) [IOTHUB_KEEP_ALIVE].", valueName: "seconds")
    )
    var keepAlive: Int?

    @Option(
        name: .customLong("auto-connect"),
        help: ArgumentHelp(
            "Connect when an operation needs it: true or false; default true (auto_connect) [IOTHUB_AUTO_CONNECT].",
            valueName: "bool"))
    var autoConnect: Bool?

    @Option(
        name: .customLong("connection-retry"),
        help: ArgumentHelp(
            "Reconnect after the connection drops: true or false; default true (connection_retry) [IOTHUB_CONNECTION_RETRY].",
            valueName: "bool"))
    var connectionRetry: Bool?

    @Option(
        name: .customLong("connection-retry-interval"),
        help: ArgumentHelp(
            "Seconds between reconnection attempts; default 10 (connection_retry_interval) [IOTHUB_CONNECTION_RETRY_INTERVAL].",
            valueName: "seconds"))
    var connectionRetryInterval: Int?

    @Option(
        name: .customLong("ensure-desired-properties"),
        help: ArgumentHelp(
            "Read the twin after every (re)connect, so that desired properties changed while disconnected reach GET /twin/desired: true or false; default true (ensure_desired_properties) [IOTHUB_ENSURE_DESIRED_PROPERTIES].",
            valueName: "bool"))
    var ensureDesiredProperties: Bool?

    @Option(
        name: .customLong("mqtt-port"),
        help: ArgumentHelp("The hub's MQTT port; default 8883 [IOTHUB_MQTT_PORT].", valueName: "port"))
    var mqttPort: Int?

    @Option(
        name: .customLong("https-port"),
        help: ArgumentHelp("The hub's HTTPS port for file upload; default 443 [IOTHUB_HTTPS_PORT].", valueName: "port"))
    var httpsPort: Int?

    @Option(
        name: .customLong("max-inflight"),
        help: ArgumentHelp(
            "Messages that may await the hub's acknowledgement at once; default 100 [IOTHUB_MAX_INFLIGHT].",
            valueName: "count"))
    var maximumInflightMessages: Int?

    @Option(
        name: .customLong("operation-timeout"),
        help: ArgumentHelp(
            "Seconds to wait for the hub to answer a connect, twin, subscribe or message acknowledgement; default 60 [IOTHUB_OPERATION_TIMEOUT].",
            valueName: "seconds"))
    var operationTimeout: Int?

    @Flag(
        inversion: .prefixedNo,
        help: ArgumentHelp(
            "MQTT over WebSockets on the HTTPS port (wss://…/$iothub/websocket) instead of port 8883, for networks that only let HTTPS out; default off (websockets) [IOTHUB_WEBSOCKETS=true]."
        ))
    var websockets: Bool?

    @Option(
        help: ArgumentHelp(
            "Send MQTT and file uploads through this proxy: http://host:port, socks4://host:port or socks5://host:port, optionally with 'user@' (proxy_options) [IOTHUB_PROXY]. A password goes in --proxy-password-file or IOTHUB_PROXY_PASSWORD, never on the command line.",
            valueName: "url"))
    var proxy: String?

    @Option(
        name: .customLong("proxy-password-file"),
        help: ArgumentHelp(
            "File with the proxy user's password [IOTHUB_PROXY_PASSWORD holds the password itself].", valueName: "file")
    )
    var proxyPasswordFile: String?

    // MARK: Store and forward

    @Option(
        name: .customLong("state-dir"),
        help: ArgumentHelp(
            "Directory for the sidecar's state, the telemetry outbox (outbox/) among it; created 0700 and locked, so each sidecar needs its own [IOTHUB_SIDECAR_STATE_DIR]. Default $XDG_STATE_HOME/iothub-sidecar or ~/.local/state/iothub-sidecar; with --local-hub, sidecar-state in the local hub's data directory.",
            valueName: "dir"))
    var stateDirectory: String?

    @Option(
        name: .customLong("telemetry-delivery"),
        help: ArgumentHelp(
            "How POST /messages answers a request without 'Prefer: respond-async': sync (200 once the hub acknowledged the message) or async (202 once it is on disk in the outbox, which delivers it); default sync [IOTHUB_SIDECAR_TELEMETRY_DELIVERY].",
            valueName: "mode"))
    var telemetryDelivery: String?

    @Option(
        name: .customLong("outbox-max-bytes"),
        help: ArgumentHelp(
            "The most bytes of messages the outbox holds; default 268435456 (256 MiB) [IOTHUB_SIDECAR_OUTBOX_MAX_BYTES].",
            valueName: "bytes"))
    var outboxMaximumBytes: Int?

    @Option(
        name: .customLong("outbox-when-full"),
        help: ArgumentHelp(
            "What a full outbox does with a new message: reject-new (answered 507) or drop-oldest (counted); default reject-new [IOTHUB_SIDECAR_OUTBOX_WHEN_FULL].",
            valueName: "policy"))
    var outboxWhenFull: String?

    @Option(
        name: .customLong("outbox-ttl"),
        help: ArgumentHelp(
            "Seconds a message may wait in the outbox before it is dropped unsent (counted); a message's own iothub-expiry wins when earlier; default 7200 [IOTHUB_SIDECAR_OUTBOX_TTL].",
            valueName: "seconds"))
    var outboxTimeToLive: Int?

    @Option(
        name: .customLong("outbox-drain-rate"),
        help: ArgumentHelp(
            "The most messages per second the outbox sends while it drains a backlog, so that the hub does not throttle; 0 (the default) for no limit [IOTHUB_SIDECAR_OUTBOX_DRAIN_RATE].",
            valueName: "count"))
    var outboxDrainRate: Int?

    @Flag(
        name: .customLong("edge-environment"),
        help: ArgumentHelp(
            "Run as an IoT Edge module: identity, gateway and trust from the runtime's IOTEDGE_* variables, SAS tokens signed by its workload API (IoTHubModuleClient.create_from_edge_environment); automatic when IOTEDGE_WORKLOADURI is set and no other credential is given [IOTHUB_EDGE_ENVIRONMENT]."
        ))
    var edgeEnvironment = false

    // MARK: Local hub

    @Flag(
        name: .customLong("local-hub"),
        help:
            "Start a local IoT Hub (iothub-localhub, installed next to this program, as a child process) and connect to it as a registered device: no cloud account needed."
    )
    var localHub = false

    @Option(
        name: .customLong("local-hub-data-dir"),
        help: ArgumentHelp(
            "Where the local hub keeps its certificates, state, ca.pem and service-connection-string (the same place as 'iothub-sidecar hub').",
            valueName: "dir"))
    var localHubDataDirectory: String = LocalHubLaunch.defaultDataDirectory

    @Option(
        name: .customLong("local-hub-mqtt-port"),
        help: ArgumentHelp("The local hub's MQTT port (0 picks a free one).", valueName: "port"))
    var localHubMQTTPort: Int = 8883

    @Option(
        name: .customLong("local-hub-https-port"),
        help: ArgumentHelp("The local hub's HTTPS port: service API, /local (0 picks a free one).", valueName: "port"))
    var localHubHTTPSPort: Int = 8443

    @Option(
        name: .customLong("local-hub-blob-port"),
        help: ArgumentHelp("The local hub's blob storage port (0 picks a free one).", valueName: "port"))
    var localHubBlobPort: Int = 10000

    @Option(
        name: .customLong("local-hub-device"),
        help: ArgumentHelp("The device id the sidecar registers and uses on the local hub.", valueName: "id"))
    var localHubDevice: String = "sidecar-device"

    @Option(
        name: .customLong("local-hub-telemetry-bytes"),
        help: ArgumentHelp(
            "How much memory the local hub's record of received telemetry (GET /local/telemetry) may take; the oldest messages go first. Default 8388608 (8 MiB).",
            valueName: "bytes"))
    var localHubTelemetryBytes: Int = 8 << 20

    // MARK: Operation

    @Option(
        name: .customLong("log-level"),
        help: ArgumentHelp(
            "trace, debug, info, notice, warning, error or critical; default info [IOTHUB_SIDECAR_LOG_LEVEL].",
            valueName: "level"))
    var logLevel: String?

    @Option(
        name: .customLong("shutdown-timeout"),
        help: ArgumentHelp(
            "Seconds the sidecar takes to stop on SIGTERM or Ctrl-C: in-flight requests finish, then the outbox delivers what it can (the rest stays on disk).",
            valueName: "seconds"))
    var shutdownTimeout: Int = 10

    // MARK: Running

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let allocatorPolicy = AllocatorPolicy.apply(environment: environment)
        let settings: ServeSettings
        do {
            settings = try ServeSettings(command: self, environment: environment)
        } catch {
            Self.fail("\(error)")
        }
        if let busy = busyPort(settings) { Self.fail(busy) }
        LoggingSystem.bootstrap { label in LineLogHandler(label: label, level: settings.logLevel) }
        let logger = Logger(label: "iothub-sidecar")
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        var configuration = settings.clientConfiguration
        var client: IoTHubDeviceClient?
        var provisioningSettings: ProvisioningSettings?
        do {
            // The credentials are checked before the state directory is touched.
            if case .provisioned(let provisioning) = settings.identity {
                _ = try provisioning.client(configuration: configuration)
                provisioningSettings = provisioning
            } else if !localHub {
                client = try await settings.identity.makeClient(configuration: configuration)
            }
        } catch {
            Self.fail("\(error)")
        }
        let stateDirectory: StateDirectory
        do {
            stateDirectory = try StateDirectory(path: settings.stateDirectory)
        } catch {
            Self.fail("\(error)")
        }
        do {
            if localHub {
                guard localHubTelemetryBytes > 0 else {
                    Self.fail("--local-hub-telemetry-bytes must be a positive number of bytes")
                }
                let hub = try await LocalHubProcess.start(arguments: [
                    "--data-dir", localHubDataDirectory, "--hostname", "localhost", "--bind", "127.0.0.1",
                    "--mqtt-port", String(localHubMQTTPort), "--https-port", String(localHubHTTPSPort),
                    "--blob-port", String(localHubBlobPort), "--device", localHubDevice,
                    "--telemetry-bytes", String(localHubTelemetryBytes), "--log-level", settings.logLevel.rawValue,
                ])
                let ports = hub.readiness
                // First in the group, so stopped last: the bridge drains to it before it goes.
                services.append(.init(service: hub))
                configuration.serverVerificationCertificate = [
                    configuration.serverVerificationCertificate, ports.caCertificatePEM,
                ].compactMap { $0 }.joined(separator: "\n")
                configuration.mqttPort = ports.mqttPort
                configuration.httpsPort = ports.httpsPort
                guard let connectionString = ports.deviceConnectionStrings[localHubDevice] else {
                    Self.fail("the local hub did not register \(localHubDevice)")
                }
                client = try IoTHubDeviceClient.fromConnectionString(
                    connectionString, configuration: configuration, logger: Logger(label: "iothub-device"))
                var metadata: Logger.Metadata = [
                    "device": "\(localHubDevice)", "mqtt": "127.0.0.1:\(ports.mqttPort)",
                    "https": "https://127.0.0.1:\(ports.httpsPort)",
                    "blob": "127.0.0.1:\(ports.blobPort)",
                ]
                metadata["ca"] = "\(localHubDataDirectory)/ca.pem"
                logger.info("local IoT Hub started", metadata: metadata)
            }
        } catch {
            Self.fail("\(error)")
        }
        var provisioner: SidecarProvisioner?
        if let provisioningSettings {
            do {
                let started = try SidecarProvisioner(
                    settings: provisioningSettings, configuration: configuration, stateDirectory: stateDirectory.path,
                    logger: logger)
                await started.start()
                client = try started.makeDeviceClient(configuration: configuration)
                provisioner = started
            } catch {
                Self.fail("\(error)")
            }
        }
        guard let client else { Self.fail("no device client") }
        let bridge: DeviceBridge
        do {
            var outbox = settings.outbox
            outbox.directory = stateDirectory.outboxPath
            bridge = try DeviceBridge(
                client: client, outbox: outbox, inbox: InboxConfiguration(directory: stateDirectory.inboxPath),
                defaultDelivery: settings.telemetryDelivery,
                shutdownTimeout: .seconds(shutdownTimeout), ensureDesiredProperties: settings.ensureDesiredProperties,
                logger: logger,
                provisioning: provisioner)
        } catch {
            Self.fail("cannot open the state in \(stateDirectory.path): \(error)")
        }
        let application = SidecarServer.service(
            bridge: bridge,
            configuration: SidecarServerConfiguration(
                listen: settings.listen, apiToken: settings.apiToken,
                requestBodyTimeout: .seconds(settings.requestBodyTimeout),
                inheritedDescriptor: settings.inheritedListener, unixSocketMode: settings.listenMode,
                unixSocketGroup: settings.listenGroup),
            logger: logger,
            onRunning: { address in
                var metadata: Logger.Metadata = [
                    "address": "\(address)",
                    "identity": "\(client.hostName)/\(client.deviceId)\(client.moduleId.map { "/" + $0 } ?? "")",
                    "transport": "\(client.configuration.websockets ? "mqtt-websockets" : "mqtt")",
                ]
                // The proxy's URL without its password.
                if let proxy = client.configuration.proxyOptions { metadata["proxy"] = "\(proxy)" }
                logger.notice("serving the device client", metadata: metadata)
            })
        services.append(.init(service: bridge))
        services.append(.init(service: application))
        if allocatorPolicy { services.append(.init(service: AllocatorTrimming())) }
        // Last, so it hears the shutdown first: long-polls and event streams end before the
        // server waits for its requests.
        services.append(.init(service: DrainOnShutdown(bridge: bridge)))
        var groupConfiguration = ServiceGroupConfiguration(
            services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(shutdownTimeout)
        groupConfiguration.maximumCancellationDuration = .seconds(30)
        do {
            try await ServiceGroup(configuration: groupConfiguration).run()
        } catch {
            let text = "\(error)"
            if text.contains("(errno: \(EADDRINUSE))") {
                Self.fail(
                    PortCheck.busy(
                        "the sidecar", address: "\(settings.listen)", flag: "--listen (IOTHUB_SIDECAR_LISTEN)"))
            }
            Self.fail(text.contains("bind(") ? "cannot serve on \(settings.listen): \(text)" : text)
        }
        withExtendedLifetime(stateDirectory) {}
        logger.info("stopped")
    }

    /// The first fixed port that another process holds, as the line to print.
    private func busyPort(_ settings: ServeSettings) -> String? {
        if settings.inheritedListener == nil, case .tcp(let host, let port) = settings.listen,
            PortCheck.isInUse(host: host, port: port)
        {
            return PortCheck.busy(
                "the sidecar", host: host, port: port, flag: "--listen HOST:PORT (IOTHUB_SIDECAR_LISTEN)")
        }
        guard localHub else { return nil }
        let ports = [
            ("MQTT", localHubMQTTPort, "--local-hub-mqtt-port"), ("HTTPS", localHubHTTPSPort, "--local-hub-https-port"),
            ("blob storage", localHubBlobPort, "--local-hub-blob-port"),
        ]
        for (what, port, flag) in ports where PortCheck.isInUse(host: "127.0.0.1", port: port) {
            return PortCheck.busy(
                "the local hub's \(what)", host: "127.0.0.1", port: port, flag: "\(flag) (0 picks a free one)")
        }
        return nil
    }

    static func fail(_ message: String) -> Never {
        StandardStreams.writeError("iothub-sidecar: \(message)\n")
        Glibc.exit(1)
    }
}

/// Tells the bridge to end long-polls and event streams as soon as shutdown begins.
struct DrainOnShutdown: Service {
    let bridge: DeviceBridge

    func run() async throws {
        try? await gracefulShutdown()
        bridge.beginDraining()
    }
}
