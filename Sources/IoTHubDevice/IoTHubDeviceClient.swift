import AsyncPrimitives
import FoundationEssentials
public import IoTHubProtocol
public import Logging
import NIOConcurrencyHelpers
import NIOSSL

/// An Azure IoT Hub device (or module) client: telemetry, cloud-to-device messages, direct
/// methods, the device twin, file upload and connection management, with the feature set of
/// Microsoft's Python `IoTHubDeviceClient` (azure-iot-device; "the Python SDK" in these docs).
///
/// MQTT 3.1.1 over TLS through libmosquitto, HTTPS through libcurl. Every method is safe to call
/// from any task. QoS 1 sends are pipelined: many may be in flight at once, each completing when
/// the hub acknowledges it; messages unacknowledged when a connection drops are sent again after
/// the reconnect and still complete their `send`.
///
/// The client's parts live in files by concern: creation (`+Creation`), the connection
/// (`+Connection`), subscriptions and incoming messages (`+Subscriptions`), telemetry
/// (`+Telemetry`), direct methods (`+Methods`), the twin (`+Twin`), SAS tokens (`+SASTokens`)
/// and file upload (`+FileUpload`, which hands over to ``FileUploadClient``).
public final class IoTHubDeviceClient: Sendable {
    /// The hub's host name (SAS tokens and the MQTT user name use it).
    public let hostName: String
    public let deviceId: String
    public let moduleId: String?
    public let configuration: DeviceClientConfiguration

    /// The connection's lifecycle (``ConnectionStateMachine``), with the `connect()` callers it
    /// answers. Every change moves ``lifecycleChanges`` on.
    typealias Lifecycle = ConnectionStateMachine<MosquittoClient, CheckedContinuation<ConnectWaitOutcome, Never>>

    let lifecycle: NIOLockedValueBox<Lifecycle>
    /// Moves on with every change of ``lifecycle``: what waits for a connection, a CONNACK or a
    /// timer waits on it.
    let lifecycleChanges = ChangeSignal()
    /// The connection attempts, the reconnect and renewal timers, and the subscriptions made
    /// after a connect: one task per client (see ``BackgroundWork``).
    let background = BackgroundWork()
    /// What listeners asked for and what the current connection has subscribed.
    let subscriptions = NIOLockedValueBox(Subscriptions())
    /// The `$version` of the last desired properties delivered.
    let lastDesiredVersion = NIOLockedValueBox<Int?>(nil)
    /// The WebSocket or proxy tunnel of the last connection attempt.
    let tunnel = NIOLockedValueBox<MQTTTunnel?>(nil)
    /// The credential (which `update_sastoken` replaces) and the expiry of the connection's token.
    let credentials: CredentialStore
    /// File upload, over HTTPS: it needs the credential and the configuration, not the connection.
    let fileUpload: FileUploadClient
    let tls: TLSContext
    /// How MQTT reaches the hub when it does not go straight over TCP (WebSockets, a proxy).
    let tunnelPlan: TunnelPlan?
    let socketDirectory: PrivateSocketDirectory?
    let logger: Logger
    let twinResponses = PendingReplies<String, TwinReply, IoTHubError>(keepingEarlyReplies: false)
    /// Cloud-to-device messages; one the hub sent before it saw the UNSUBSCRIBE after the last
    /// listener went is kept for the next listener (libmosquitto acknowledged it on arrival).
    let messageStreams = Broadcaster<Message>(keepingUndelivered: true)
    /// Where cloud-to-device (or module input) messages go instead of ``messages()``, when set.
    let inbox = NIOLockedValueBox<CloudToDeviceInbox?>(nil)
    /// The inbox holding messages staged since the network thread's last write.
    let stagingInbox = NIOLockedValueBox<CloudToDeviceInbox?>(nil)
    let methodStreams = Broadcaster<MethodRequest>(keepingUndelivered: true)
    let desiredStreams = Broadcaster<JSONValue>(keepingUndelivered: true)
    let stateStreams = Broadcaster<ConnectionStateChange>(bufferingPolicy: .bufferingNewest(64))
    let errorStreams = Broadcaster<IoTHubError>(bufferingPolicy: .bufferingNewest(64))
    let tokenStreams = Broadcaster<Void>(bufferingPolicy: .bufferingNewest(1))
    /// The queues of the deprecated blocking receives (`+BlockingReceives`).
    let blockingReceives = BlockingReceives()

    /// Creates a client; validates everything now, so a bad argument fails here and not later.
    public init(
        hostName: String, deviceId: String, moduleId: String? = nil, credential: DeviceCredential,
        configuration: DeviceClientConfiguration = DeviceClientConfiguration(),
        logger: Logger = Logger(label: "iothub-device")
    ) throws(IoTHubError) {
        guard !hostName.isEmpty, !hostName.contains("/") else {
            throw .valueError(field: "hostname", reason: "is not a host name")
        }
        guard !deviceId.isEmpty else { throw .valueError(field: "device_id", reason: "is empty") }
        if let moduleId, moduleId.isEmpty { throw .valueError(field: "module_id", reason: "is empty") }
        try configuration.validate()
        switch credential {
        case .symmetricKey(let key):
            // Sign once to prove the key is usable.
            _ = try SASToken(
                resourceURI: SASToken.resourceURI(hostName: hostName, deviceId: deviceId, moduleId: moduleId), key: key,
                timeToLive: 60)
        case .sasToken(let token):
            try CredentialStore.check(token, hostName: hostName, deviceId: deviceId, moduleId: moduleId)
        case .x509:
            break
        case .edgeWorkload(let workload):
            guard workload.moduleId == moduleId else {
                throw .valueError(
                    field: "IOTEDGE_MODULEID", reason: "the workload signs for another module than the client's")
            }
        }
        var clientCertificate: X509Credential?
        if case .x509(let x509) = credential { clientCertificate = x509 }
        let policy = try TLSPolicy(
            configuration: configuration, hostName: hostName, clientCertificate: clientCertificate)
        self.tls = try TLSContext(policy: policy)
        tunnelPlan = try TunnelPlan.forClient(
            configuration: configuration, host: configuration.gatewayHostName ?? hostName, policy: policy, verifier: tls
        )
        socketDirectory = tunnelPlan == nil ? nil : try PrivateSocketDirectory()
        self.hostName = hostName
        self.deviceId = deviceId
        self.moduleId = moduleId
        self.configuration = configuration
        self.logger = logger
        self.credentials = CredentialStore(
            credential, hostName: hostName, deviceId: deviceId, moduleId: moduleId,
            tokenTimeToLive: configuration.sasTokenTimeToLive)
        self.fileUpload = FileUploadClient(
            credentials: credentials, configuration: configuration, tlsPolicy: policy, trustStore: tls.trustStore,
            logger: logger)
        let clientId = MQTTIdentity(hostName: hostName, deviceId: deviceId, moduleId: moduleId).clientId
        var lifecycle = Lifecycle(
            clientId: clientId, retriesConnection: configuration.connectionRetry,
            retryInterval: configuration.connectionRetryInterval, at: .now)
        if case .sasToken(let token) = credential { lifecycle.newTokenSupplied(expiringAt: token.expiryDate, at: .now) }
        self.lifecycle = NIOLockedValueBox(lifecycle)
        background.setResident(runTimers())
        // Listeners coming and going subscribe and unsubscribe (the Python SDK's handlers set
        // and set to None).
        messageStreams.observeListeners { [weak self] in self?.listenersChanged(.cloudToDevice, $0) }
        methodStreams.observeListeners { [weak self] in self?.listenersChanged(.methods, $0) }
        desiredStreams.observeListeners { [weak self] in self?.listenersChanged(.desiredProperties, $0) }
        if case .sasToken = credential { background.start() }
    }

    /// A client dropped without `shutdown` still closes its connection. Its background work is
    /// cancelled (none of it holds the client while it waits), and the MQTT connection sends
    /// DISCONNECT and stops its network thread on its own control queue, without waiting here:
    /// `deinit` may run on that network thread (the last reference can be dropped in an event
    /// handler), which must not wait for itself.
    deinit {
        background.cancel()
        lifecycle.withLockedValue { $0.connection }?.disconnectWithoutWaiting()
    }

    /// Whether the client is connected now.
    public var isConnected: Bool {
        lifecycle.withLockedValue { $0.phase == .connected }
    }

    /// How many connection attempts the client has made while reconnecting — after losing the
    /// connection, or to renew its credentials — failed ones included. Each reconnection
    /// (`reconnecting`, then `connected`) takes one or more of them.
    public var reconnectionAttempts: Int {
        lifecycle.withLockedValue { $0.reconnectionAttempts }
    }

    /// The connection state, since when, the last error, the token expiry and the kind of
    /// credential, for status reports.
    public var status: ClientStatus {
        let (state, since, lastError) = lifecycle.withLockedValue { ($0.phase.reported, $0.since, $0.lastError) }
        return ClientStatus(
            state: state, since: since, lastError: lastError, tokenExpiry: credentials.tokenExpiry,
            credential: credentials.credential.kind)
    }
}

/// A broadcaster of any element type that can be finished.
protocol FinishableBroadcaster {
    func finish()
}

extension Broadcaster: FinishableBroadcaster {}
