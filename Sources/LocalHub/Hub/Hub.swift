import AsyncPrimitives
import Foundation
import IoTHubProtocol
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The state and behaviour of the local IoT Hub, independent of its listeners: registry, twins,
/// MQTT sessions, cloud-to-device queues, direct-method calls, telemetry, file uploads, faults.
///
/// All mutable state sits behind one lock; no lock is held while waiting or doing I/O. Packets
/// for devices are computed under the lock and sent after it is released.
final class Hub: Sendable {
    struct State: Sendable {
        var identities: [IdentityKey: IdentityRecord] = [:]
        var sessions: [IdentityKey: SessionState] = [:]
        /// Direct-method calls waiting for an answer: request id → the identity called.
        var pendingMethods: [String: IdentityKey] = [:]
        var lastMethodRequestId: UInt64 = 0
        var lastConnectionId: UInt64 = 0
        /// Every CONNECT received, accepted or not.
        var connectAttempts: UInt64 = 0
        var faults = Faults()
        var fileUploads: [String: PendingFileUpload] = [:]
        /// Event sources routed to the built-in endpoint besides telemetry.
        var routedEventSources: Set<MessageSource> = []
        /// The last connection-state event's number (``Hub/nextConnectionStateSequenceNumber(in:)``).
        var lastConnectionStateSequence: UInt64 = 0
    }

    let hostName: String
    let ownerPolicyName: String
    let ownerPolicyKey: String
    let logger: Logger
    /// How long a new MQTT connection may take to send CONNECT.
    let connectTimeout: TimeAmount
    let telemetry: EventLog<TelemetryRecord>
    let fileUploadNotifications: EventLog<FileUploadNotification>
    let blobs: BlobStore
    /// Host and port of the blob endpoint, as file-upload answers name it (`localhost:10000`).
    let blobHost: NIOLockedValueBox<String>
    /// The IoT Edge device whose modules the workload API signs for, once it listens.
    let edgeDevice = NIOLockedValueBox<EdgeDevice?>(nil)

    let state: NIOLockedValueBox<State>
    private let persistence: StatePersistence?
    /// Wakes long-polls of registry-wide changes (connection state).
    let changes = ChangeSignal()
    /// When the hub started, as connection-state sequence numbers begin.
    let startTimeDigits: String
    /// The answers to direct-method calls, by request id.
    let methodReplies = PendingReplies<String, MethodCallResult, ServiceError>(keepingEarlyReplies: false)
    /// The Device Provisioning Service that assigns devices to this hub.
    let provisioning: ProvisioningService

    init(
        hostName: String, ownerPolicyName: String = "iothubowner", ownerPolicyKey: String,
        persistedState: PersistedState? = nil, persistence: StatePersistence? = nil,
        telemetryCapacity: Int = 100_000, telemetryByteCapacity: Int = 64 << 20,
        connectTimeout: TimeAmount = .seconds(10),
        routedEventSources: Set<MessageSource> = [], provisioning: ProvisioningService? = nil, logger: Logger,
        now: Date = Date()
    ) {
        self.provisioning =
            provisioning
            ?? ProvisioningService(
                idScope: ProvisioningService.newIdScope(), hostName: hostName,
                policyKey: IdentityAuthentication.randomKey(),
                persisted: persistedState?.provisioning)
        self.startTimeDigits = Self.fileTimeDigits(now)
        self.connectTimeout = connectTimeout
        self.hostName = hostName
        self.ownerPolicyName = ownerPolicyName
        self.ownerPolicyKey = ownerPolicyKey
        self.logger = logger
        self.telemetry = EventLog(capacity: telemetryCapacity, byteCapacity: telemetryByteCapacity)
        self.fileUploadNotifications = EventLog(capacity: 10_000, byteCapacity: 16 << 20)
        self.blobs = BlobStore()
        self.blobHost = NIOLockedValueBox("\(hostName):10000")
        var initial = State()
        for record in persistedState?.identities ?? [] {
            initial.identities[record.key] = record
        }
        initial.routedEventSources = routedEventSources.union(persistedState?.routedEventSources ?? []).subtracting([
            .telemetry
        ])
        self.state = NIOLockedValueBox(initial)
        self.persistence = persistence
    }

    /// The owner policy's connection string (service SDKs use it).
    var serviceConnectionString: ConnectionString {
        ConnectionString(
            hostName: hostName, sharedAccessKeyName: ownerPolicyName, credential: .sharedAccessKey(ownerPolicyKey))
    }

    /// Records that the persisted part of the state changed; it is written soon after.
    func stateChanged() {
        persistence?.markDirty()
    }

    /// The persisted part of the state.
    func snapshot() -> PersistedState {
        let provisioningState = provisioning.snapshot()
        return state.withLockedValue { state in
            PersistedState(
                identities: state.identities.values.sorted { $0.key.clientId < $1.key.clientId },
                routedEventSources: MessageSource.events.filter(state.routedEventSources.contains),
                provisioning: provisioningState)
        }
    }

    /// Whether `key` is connected now.
    func isConnected(_ key: IdentityKey) -> Bool {
        state.withLockedValue { $0.sessions[key]?.connection != nil }
    }

    /// How many identities (devices and modules) are registered.
    var identityCount: Int {
        state.withLockedValue { $0.identities.count }
    }

    /// Returns once `key` is connected, or after `timeout`, or when the task is cancelled.
    func waitUntilConnected(_ key: IdentityKey, timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, !Task.isCancelled {
            let generation = changes.generation
            if isConnected(key) { return }
            await changes.wait(afterGeneration: generation, timeout: deadline - ContinuousClock.now)
        }
    }

    /// The clients connected now, how each arrived, its user agent and model id, sorted by
    /// client id.
    func connections() -> [(clientId: String, transport: MQTTTransport, userAgent: String?, modelId: String?)] {
        state.withLockedValue { state in
            state.sessions.compactMap { key, session in
                session.connection.map { (key.clientId, $0.transport, $0.userAgent, $0.modelId) }
            }
        }.sorted { $0.clientId < $1.clientId }
    }

    /// Closes every device connection (at shutdown).
    func closeAllConnections() {
        let connections = state.withLockedValue { state in state.sessions.values.compactMap(\.connection) }
        for connection in connections { connection.close() }
    }
}
