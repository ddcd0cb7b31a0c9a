import Foundation
public import IoTHubProtocol
public import Logging
import NIOConcurrencyHelpers
public import NIOCore
public import NIOPosix
public import ServiceLifecycle

/// A local Azure IoT Hub: the device-facing MQTT endpoint (TLS and WebSockets), HTTPS file
/// upload with blob storage, the service REST API that Microsoft's service SDKs use, and
/// emulator endpoints under `/local`.
///
/// Run it as a `Service` in a `ServiceGroup` (``run()``), or call ``start()`` and ``stop()``.
public final class LocalHub: Service, Sendable {
    /// Settings of a local hub.
    public struct Configuration: Sendable {
        /// The IoT Hub host name devices use in connection strings and SAS tokens.
        public var hostName: String
        /// The address the listeners bind to.
        public var bindAddress: String
        /// MQTT over TLS (IoT Hub: 8883). 0 picks a free port.
        public var mqttPort: Int
        /// HTTPS: service API, file upload, `/local`, MQTT over WebSockets (IoT Hub: 443). 0 picks a free port.
        public var httpsPort: Int
        /// Blob storage for file uploads. 0 picks a free port.
        public var blobPort: Int
        /// Where certificates, keys and state are kept; nil keeps everything in memory.
        public var dataDirectory: String?
        /// Devices to register at start (SAS, generated keys) if they do not exist.
        public var devices: [String]
        /// How many telemetry messages the hub keeps for reading.
        public var telemetryCapacity: Int
        /// How much memory the telemetry kept for reading may take, in bytes (bodies, properties and
        /// what the hub keeps with each message); the oldest messages are dropped first.
        public var telemetryByteCapacity: Int
        /// How long a new MQTT connection may take to send CONNECT before it is closed.
        public var connectTimeout: Duration
        /// Event sources routed to the built-in endpoint (the telemetry log) besides telemetry,
        /// like IoT Hub routes from those sources to `events`; `/local/routes` changes them at
        /// run time. With a data directory the routes are kept in its state and added to these.
        public var routedEventSources: Set<MessageSource>
        /// An IoT Edge device whose modules LocalHub serves as the Edge runtime would: the
        /// workload API (trust bundle, signing with a module's key) on
        /// ``edgeWorkloadSocketPath``, and `GET /local/edge-environment` for a module's
        /// `IOTEDGE_*` variables. Registered at start if it does not exist. Both or neither.
        public var edgeDeviceId: String?
        /// The unix socket of the IoT Edge workload API (with ``edgeDeviceId``).
        public var edgeWorkloadSocketPath: String?

        public init(
            hostName: String = "localhost", bindAddress: String = "127.0.0.1", mqttPort: Int = 8883,
            httpsPort: Int = 8443, blobPort: Int = 10000, dataDirectory: String? = nil, devices: [String] = [],
            telemetryCapacity: Int = 100_000, telemetryByteCapacity: Int = 64 << 20,
            connectTimeout: Duration = .seconds(10),
            routedEventSources: Set<MessageSource> = [], edgeDeviceId: String? = nil,
            edgeWorkloadSocketPath: String? = nil
        ) {
            self.edgeDeviceId = edgeDeviceId
            self.edgeWorkloadSocketPath = edgeWorkloadSocketPath
            self.telemetryByteCapacity = telemetryByteCapacity
            self.routedEventSources = routedEventSources
            self.connectTimeout = connectTimeout
            self.hostName = hostName
            self.bindAddress = bindAddress
            self.mqttPort = mqttPort
            self.httpsPort = httpsPort
            self.blobPort = blobPort
            self.dataDirectory = dataDirectory
            self.devices = devices
            self.telemetryCapacity = telemetryCapacity
        }
    }

    /// The ports the listeners are bound to.
    public struct Ports: Sendable, Equatable {
        public var mqtt: Int
        public var https: Int
        public var blob: Int
    }

    public let configuration: Configuration
    /// PEM of the CA that issued the hub's server certificate: what clients must trust.
    public let caCertificatePEM: String
    let hub: Hub
    private let authority: CertificateAuthority
    private let persistence: StatePersistence?
    let group: any EventLoopGroup
    private let logger: Logger
    private let listeners = OpenListeners()

    /// Loads (or creates) the data directory's certificates, owner key and state.
    public init(
        configuration: Configuration, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "localhub")
    ) throws(LocalHubError) {
        guard !configuration.hostName.isEmpty, !configuration.hostName.contains("/") else {
            throw .configuration("the host name '\(configuration.hostName)' is not valid")
        }
        guard (configuration.edgeDeviceId == nil) == (configuration.edgeWorkloadSocketPath == nil) else {
            throw .configuration("an IoT Edge device needs both its device id and the workload API's socket path")
        }
        if let path = configuration.edgeWorkloadSocketPath, !path.hasPrefix("/") {
            throw .configuration("the workload API's socket path '\(path)' is not absolute")
        }
        self.configuration = configuration
        self.group = eventLoopGroup
        self.logger = logger
        var ownerKey = IdentityAuthentication.randomKey()
        var idScope = ProvisioningService.newIdScope()
        var provisioningKey = IdentityAuthentication.randomKey()
        var persisted: PersistedState?
        if let path = configuration.dataDirectory {
            let directory = try DataDirectory(path: path)
            authority = try directory.loadOrCreateCertificates(hostName: configuration.hostName)
            if let data = try directory.read(directory.serviceConnectionString) {
                let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                guard let existing = try? ConnectionString(parsing: text), existing.deviceId == nil,
                    existing.sharedAccessKeyName != nil,
                    case .sharedAccessKey(let key) = existing.credential
                else {
                    throw .dataDirectory(
                        "\(directory.serviceConnectionString.path) does not hold a policy connection string")
                }
                ownerKey = key
            }
            let persistence = StatePersistence(directory: directory, logger: logger)
            persisted = try persistence.load()
            self.persistence = persistence
            let policy = ConnectionString(
                hostName: configuration.hostName, sharedAccessKeyName: "iothubowner",
                credential: .sharedAccessKey(ownerKey))
            try directory.write(
                Data((policy.rendered() + "\n").utf8), to: directory.serviceConnectionString, permissions: 0o600)
            (idScope, provisioningKey) = try Self.loadProvisioningIdentity(
                directory, hostName: configuration.hostName, idScope: idScope, key: provisioningKey)
        } else {
            do {
                authority = try CertificateAuthority.generate(hostNames: [configuration.hostName])
            } catch {
                throw .configuration("cannot generate certificates: \(error)")
            }
            persistence = nil
        }
        caCertificatePEM = authority.caCertificatePEM
        hub = Hub(
            hostName: configuration.hostName, ownerPolicyKey: ownerKey, persistedState: persisted,
            persistence: persistence,
            telemetryCapacity: configuration.telemetryCapacity,
            telemetryByteCapacity: configuration.telemetryByteCapacity,
            connectTimeout: .nanoseconds(
                Int64(configuration.connectTimeout.components.seconds) * 1_000_000_000 + configuration.connectTimeout
                    .components.attoseconds / 1_000_000_000),
            routedEventSources: configuration.routedEventSources,
            provisioning: ProvisioningService(
                idScope: idScope, hostName: configuration.hostName, policyKey: provisioningKey,
                persisted: persisted?.provisioning),
            logger: logger)
        persistence?.attach { [hub] in hub.snapshot() }
        for device in configuration.devices + [configuration.edgeDeviceId].compactMap({ $0 }) {
            do {
                _ = try hub.ensureDevice(device)
            } catch {
                throw .configuration("cannot register device '\(device)': \(error.message)")
            }
        }
    }

    /// The owner policy's connection string, for service SDKs and `iothub-sidecar sas-token`.
    public var serviceConnectionString: String {
        hub.serviceConnectionString.rendered()
    }

    /// The ID scope of the hub's Device Provisioning Service (devices give it to
    /// `ProvisioningDeviceClient`; the provisioning host is this hub's host name and MQTT port).
    public var idScope: String {
        hub.provisioning.idScope
    }

    /// The provisioning service policy's connection string, for the provisioning service SDKs
    /// (`azure-iot-deviceprovisioning`); its host is this hub's HTTPS endpoint.
    public var provisioningServiceConnectionString: String {
        hub.provisioning.serviceConnectionString.rendered()
    }

    /// Creates (or replaces) an individual enrollment with a symmetric key, for tests of
    /// provisioning clients in the same process; returns its primary key.
    /// - Parameters:
    ///   - registrationId: DPS's rule: 1–128 lower-case letters, digits or `-._:`.
    ///   - deviceId: the device id to create; nil for the registration id.
    ///   - enabled: false makes registrations answer `disabled`.
    ///   - initialDesired: the created device's desired properties.
    public func enrollDevice(
        registrationId: String, deviceId: String? = nil, enabled: Bool = true,
        initialDesired: [String: JSONValue]? = nil
    ) throws(LocalHubError) -> String {
        var body: [String: JSONValue] = [
            "attestation": ["type": "symmetricKey"], "provisioningStatus": enabled ? "enabled" : "disabled",
        ]
        if let deviceId { body["deviceId"] = .string(deviceId) }
        if let initialDesired { body["initialTwin"] = ["properties": ["desired": .object(initialDesired)]] }
        return try enroll(registrationId, isGroup: false, body: .object(body))
    }

    /// Creates (or replaces) a symmetric-key enrollment group, for tests of provisioning
    /// clients in the same process; returns the group key (a device's key is
    /// base64(HMAC-SHA256(group key, registration id))).
    public func enrollGroup(_ groupId: String, enabled: Bool = true) throws(LocalHubError) -> String {
        try enroll(
            groupId, isGroup: true,
            body: ["attestation": ["type": "symmetricKey"], "provisioningStatus": enabled ? "enabled" : "disabled"])
    }

    /// How many registrations of `registrationId` the provisioning service handled (0 if none).
    public func registrationCount(of registrationId: String) -> Int {
        hub.provisioning.registration(registrationId)?.registrationCount ?? 0
    }

    private func enroll(_ id: String, isGroup: Bool, body: JSONValue) throws(LocalHubError) -> String {
        guard ProvisioningProtocol.isValidRegistrationId(id) else {
            throw .configuration(ProvisioningProtocol.registrationIdProblem(id))
        }
        do throws(ProvisioningFailure) {
            let request = try ProvisioningJSON.readEnrollment(
                body, id: id, isGroup: isGroup, hubHostName: hub.hostName, now: Date())
            let enrollment = try hub.provisioning.put(request, ifMatch: nil)
            hub.stateChanged()
            guard let key = enrollment.attestation.primaryKey else { throw .badRequest("the enrollment has no key") }
            return key
        } catch {
            throw .configuration("cannot enroll '\(id)': \(error.message)")
        }
    }

    /// Reads the ID scope and the provisioning service key from the data directory, or writes
    /// the given new ones there.
    private static func loadProvisioningIdentity(
        _ directory: DataDirectory, hostName: String, idScope: String, key: String
    ) throws(LocalHubError) -> (String, String) {
        var idScope = idScope
        var key = key
        if let data = try directory.read(directory.idScope) {
            let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !text.isEmpty, text.count <= 64, text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) })
            else {
                throw .dataDirectory("\(directory.idScope.path) does not hold an ID scope (letters and digits)")
            }
            idScope = text
        }
        if let data = try directory.read(directory.provisioningServiceConnectionString) {
            let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard let existing = try? ConnectionString(parsing: text),
                existing.sharedAccessKeyName == ProvisioningService.policyName,
                case .sharedAccessKey(let existingKey) = existing.credential
            else {
                throw .dataDirectory(
                    "\(directory.provisioningServiceConnectionString.path) does not hold a provisioning service connection string"
                )
            }
            key = existingKey
        }
        try directory.write(Data((idScope + "\n").utf8), to: directory.idScope, permissions: 0o644)
        let policy = ConnectionString(
            hostName: hostName, sharedAccessKeyName: ProvisioningService.policyName, credential: .sharedAccessKey(key))
        try directory.write(
            Data((policy.rendered() + "\n").utf8), to: directory.provisioningServiceConnectionString, permissions: 0o600
        )
        return (idScope, key)
    }

    /// Registers a SAS device (or module) if needed and returns its connection string.
    /// - Parameter gatewayHostName: added as `GatewayHostName` (for clients that must connect to
    ///   another name than the hub's).
    public func deviceConnectionString(deviceId: String, moduleId: String? = nil) throws(LocalHubError) -> String {
        let key = IdentityKey(deviceId: deviceId, moduleId: moduleId)
        let record: IdentityRecord
        do throws(ServiceError) {
            if let existing = hub.identity(key) {
                record = existing
            } else {
                let device = try hub.ensureDevice(deviceId)
                if moduleId == nil {
                    record = device
                } else {
                    record = try hub.putIdentity(key, body: [:], ifMatch: nil)
                }
            }
        } catch {
            throw .configuration("cannot register \(key): \(error.message)")
        }
        guard let primaryKey = record.authentication.primaryKey else {
            throw .configuration("\(key) does not use a shared access key")
        }
        return ConnectionString(
            hostName: hub.hostName, deviceId: deviceId, moduleId: moduleId, credential: .sharedAccessKey(primaryKey)
        ).rendered()
    }

    /// Opens the listeners; returns the bound ports.
    @discardableResult
    public func start() async throws(LocalHubError) -> Ports {
        let tls = try Listeners.tlsContext(authority)
        let host = configuration.bindAddress
        let mqtt = try await Listeners.mqtt(
            host: host, port: configuration.mqttPort, group: group, tls: tls, hub: hub, logger: logger)
        listeners.append(mqtt)
        let https = try await Listeners.https(
            host: host, port: configuration.httpsPort, group: group, tls: tls, router: .https(for: hub), hub: hub,
            logger: logger)
        listeners.append(https)
        let blob = try await Listeners.blob(
            host: host, port: configuration.blobPort, group: group, tls: tls, router: .blob(for: hub))
        listeners.append(blob)
        if let deviceId = configuration.edgeDeviceId, let socketPath = configuration.edgeWorkloadSocketPath {
            let edge = EdgeDevice(deviceId: deviceId, socketPath: socketPath)
            let workload = try await Listeners.unixHTTP(
                path: socketPath, group: group,
                router: .edgeWorkload(for: hub, edge: edge, caCertificatePEM: caCertificatePEM),
                name: "the IoT Edge workload API")
            listeners.append(workload)
            hub.edgeDevice.withLockedValue { $0 = edge }
            logger.info(
                "IoT Edge workload API listening", metadata: ["device": "\(deviceId)", "socket": "\(socketPath)"])
        }
        let ports = Ports(
            mqtt: mqtt.localAddress?.port ?? 0, https: https.localAddress?.port ?? 0, blob: blob.localAddress?.port ?? 0
        )
        hub.blobHost.withLockedValue { $0 = "\(configuration.hostName):\(ports.blob)" }
        listeners.setPorts(ports)
        persistence?.start()
        logger.info(
            "local IoT Hub listening",
            metadata: [
                "hostName": "\(configuration.hostName)", "mqtt": "\(host):\(ports.mqtt)",
                "https": "\(host):\(ports.https)",
                "blob": "\(host):\(ports.blob)",
            ])
        return ports
    }

    /// The bound ports (after ``start()``).
    public var ports: Ports? { listeners.ports }

    /// The `IOTEDGE_*` variables of a module of the IoT Edge device (``Configuration/edgeDeviceId``),
    /// as the Edge runtime sets them in the module's container; the module is registered if it
    /// does not exist. Only after ``start()``.
    public func edgeEnvironment(moduleId: String) throws(LocalHubError) -> [String: String] {
        guard let edge = hub.edgeDevice.withLockedValue({ $0 }) else {
            throw .configuration("the hub serves no IoT Edge device (edgeDeviceId and edgeWorkloadSocketPath, started)")
        }
        let key = IdentityKey(deviceId: edge.deviceId, moduleId: moduleId)
        let record: IdentityRecord
        do throws(ServiceError) {
            if let existing = hub.identity(key) {
                record = existing
            } else {
                record = try hub.putIdentity(key, body: [:], ifMatch: nil)
            }
        } catch {
            throw .configuration("cannot register \(key): \(error.message)")
        }
        return edge.environment(moduleId: moduleId, generationId: record.generationId, hostName: hub.hostName)
    }

    /// Closes the listeners and every device connection, and saves the state.
    public func stop() async {
        for channel in listeners.removeAll() {
            try? await channel.close()
        }
        let edge = hub.edgeDevice.withLockedValue { edge in
            defer { edge = nil }
            return edge
        }
        if let socketPath = edge?.socketPath {
            try? FileManager.default.removeItem(atPath: socketPath)
        }
        hub.closeAllConnections()
        await persistence?.finish()
    }

    /// Runs until graceful shutdown (SIGTERM/SIGINT in a `ServiceGroup`).
    public func run() async throws {
        if ports == nil { try await start() }
        try? await gracefulShutdown()
        await stop()
    }
}

/// The listeners ``LocalHub/start()`` opened and the ports they are bound to, which
/// ``LocalHub/stop()`` closes.
private final class OpenListeners: Sendable {
    private let state = NIOLockedValueBox<(channels: [any Channel], ports: LocalHub.Ports?)>(([], nil))

    func append(_ channel: any Channel) { state.withLockedValue { $0.channels.append(channel) } }
    func setPorts(_ ports: LocalHub.Ports) { state.withLockedValue { $0.ports = ports } }
    var ports: LocalHub.Ports? { state.withLockedValue { $0.ports } }

    /// The open channels, forgotten here: the caller closes them.
    func removeAll() -> [any Channel] {
        state.withLockedValue { state in
            defer { state.channels.removeAll() }
            return state.channels
        }
    }
}
