import AsyncPrimitives
public import Foundation
public import IoTHubProtocol
public import Logging
import NIOConcurrencyHelpers
import NIOSSL

/// An Azure IoT Hub device (or module) client: telemetry, cloud-to-device messages, direct
/// methods, the device twin, file upload and connection management, with the feature set of
/// Microsoft's Python `IoTHubDeviceClient`.
///
/// MQTT 3.1.1 over TLS through libmosquitto, HTTPS through libcurl. Every method is safe to call
/// from any task. QoS 1 sends are pipelined: many may be in flight at once, each completing when
/// the hub acknowledges it; messages unacknowledged when a connection drops are sent again after
/// the reconnect and still complete their `send`.
public final class IoTHubDeviceClient: Sendable {
    /// The hub's host name (SAS tokens and the MQTT user name use it).
    public let hostName: String
    public let deviceId: String
    public let moduleId: String?
    public let configuration: DeviceClientConfiguration

    private enum Phase: Equatable {
        case disconnected, connecting, connected, reconnecting, shutdown
    }

    private enum Feature: Hashable, CaseIterable {
        case cloudToDevice, methods, twinResponses, desiredProperties
    }

    private struct State {
        var phase = Phase.disconnected
        var since = Date()
        var lastError: IoTHubError?
        var credential: DeviceCredential
        var mqtt: MosquittoClient?
        /// The shared connect in progress, so concurrent callers wait for the same attempt.
        var connecting: Task<Result<Void, IoTHubError>, Never>?
        var reconnectTask: Task<Void, Never>?
        var renewalTask: Task<Void, Never>?
        var tokenSignalTask: Task<Void, Never>?
        var connackWaiter: (id: Int, continuation: CheckedContinuation<Int32, Never>)?
        /// Why the connection ended before its CONNACK, when the transport could tell (a failed
        /// TLS handshake); read by the connection attempt that was waiting.
        var connectionEndReason: String?
        var lastAttemptId = 0
        var enabled: Set<Feature> = []
        var subscribed: Set<Feature> = []
        var lastDesiredVersion: Int?
        var tokenExpiry: Date?
        /// The WebSocket or proxy tunnel of the current connection attempt.
        var tunnel: MQTTTunnel?
        /// Connection attempts made while reconnecting (see ``reconnectionAttempts``).
        var reconnectionAttempts = 0
    }

    private let state: NIOLockedValueBox<State>
    private let tls: TLSContext
    /// How MQTT reaches the hub when it does not go straight over TCP (WebSockets, a proxy).
    private let tunnelPlan: TunnelPlan?
    private let socketDirectory: PrivateSocketDirectory?
    private let logger: Logger
    private let twinResponses = PendingReplies<String, TwinReply, IoTHubError>(keepingEarlyReplies: false)
    private let messageStreams = Broadcaster<Message>()
    private let methodStreams = Broadcaster<MethodRequest>()
    private let desiredStreams = Broadcaster<JSONValue>()
    private let stateStreams = Broadcaster<ConnectionStateChange>(bufferingPolicy: .bufferingNewest(64))
    private let errorStreams = Broadcaster<IoTHubError>(bufferingPolicy: .bufferingNewest(64))
    private let tokenStreams = Broadcaster<Void>(bufferingPolicy: .bufferingNewest(1))

    // MARK: Creation

    /// Creates a client; validates everything now, so a bad argument fails here and not later.
    public init(
        hostName: String, deviceId: String, moduleId: String? = nil, credential: DeviceCredential,
        configuration: DeviceClientConfiguration = DeviceClientConfiguration(), logger: Logger = Logger(label: "iothub-device")
    ) throws(IoTHubError) {
        guard !hostName.isEmpty, !hostName.contains("/") else { throw .valueError(field: "hostname", reason: "is not a host name") }
        guard !deviceId.isEmpty else { throw .valueError(field: "device_id", reason: "is empty") }
        if let moduleId, moduleId.isEmpty { throw .valueError(field: "module_id", reason: "is empty") }
        try configuration.validate()
        switch credential {
        case .symmetricKey(let key):
            // Sign once to prove the key is usable.
            _ = try SASToken(resourceURI: SASToken.resourceURI(hostName: hostName, deviceId: deviceId, moduleId: moduleId), key: key, timeToLive: 60)
        case .sasToken(let token):
            try Self.check(token, hostName: hostName, deviceId: deviceId, moduleId: moduleId)
        case .x509:
            break
        }
        var clientCertificate: X509Credential?
        if case .x509(let x509) = credential { clientCertificate = x509 }
        let policy = TLSPolicy(configuration: configuration, hostName: hostName, clientCertificate: clientCertificate)
        self.tls = try TLSContext(policy: policy)
        if configuration.websockets || configuration.proxyOptions != nil {
            tunnelPlan = TunnelPlan(
                host: configuration.gatewayHostName ?? hostName, port: configuration.websockets ? configuration.httpsPort : configuration.mqttPort,
                webSocket: configuration.websockets, proxy: configuration.proxyOptions, tls: try NIOSSLContext.forTunnel(policy), verifier: tls,
                userAgent: UserAgent.string + configuration.productInfo, timeout: min(configuration.operationTimeout, .seconds(30)))
            socketDirectory = try PrivateSocketDirectory()
        } else {
            tunnelPlan = nil
            socketDirectory = nil
        }
        self.hostName = hostName
        self.deviceId = deviceId
        self.moduleId = moduleId
        self.configuration = configuration
        self.logger = logger
        self.state = NIOLockedValueBox(State(credential: credential))
        if case .sasToken(let token) = credential { scheduleTokenSignal(for: token) }
    }

    /// `create_from_connection_string`: device or module strings with `SharedAccessKey`,
    /// `SharedAccessSignature`, or `x509=true` together with `x509`. A `GatewayHostName` in the
    /// string is used unless the configuration names one.
    public static func fromConnectionString(
        _ text: String, x509: X509Credential? = nil, configuration: DeviceClientConfiguration = DeviceClientConfiguration(),
        logger: Logger = Logger(label: "iothub-device")
    ) throws(IoTHubError) -> IoTHubDeviceClient {
        let connectionString = try ConnectionString(parsing: text)
        guard let deviceId = connectionString.deviceId else {
            throw .valueError(field: "DeviceId", reason: "is missing: a device client needs a device or module connection string")
        }
        var configuration = configuration
        if configuration.gatewayHostName == nil { configuration.gatewayHostName = connectionString.gatewayHostName }
        let credential: DeviceCredential
        switch connectionString.credential {
        case .sharedAccessKey(let key): credential = .symmetricKey(key)
        case .sharedAccessSignature(let token): credential = .sasToken(token)
        case .x509:
            guard let x509 else { throw .valueError(field: "x509", reason: "x509=true needs a certificate and key") }
            credential = .x509(x509)
        }
        if x509 != nil, case .x509 = connectionString.credential {} else if x509 != nil {
            throw .valueError(field: "x509", reason: "a certificate was given but the connection string does not say x509=true")
        }
        return try IoTHubDeviceClient(
            hostName: connectionString.hostName, deviceId: deviceId, moduleId: connectionString.moduleId, credential: credential,
            configuration: configuration, logger: logger)
    }

    /// `create_from_sastoken`: the token names the hub, device and module.
    public static func fromSASToken(
        _ text: String, configuration: DeviceClientConfiguration = DeviceClientConfiguration(), logger: Logger = Logger(label: "iothub-device")
    ) throws(IoTHubError) -> IoTHubDeviceClient {
        let token = try SASToken(parsing: text)
        let (hostName, deviceId, moduleId) = try Self.identity(of: token)
        return try IoTHubDeviceClient(
            hostName: hostName, deviceId: deviceId, moduleId: moduleId, credential: .sasToken(token), configuration: configuration, logger: logger)
    }

    /// `create_from_symmetric_key`.
    public static func fromSymmetricKey(
        _ key: String, hostName: String, deviceId: String, moduleId: String? = nil,
        configuration: DeviceClientConfiguration = DeviceClientConfiguration(), logger: Logger = Logger(label: "iothub-device")
    ) throws(IoTHubError) -> IoTHubDeviceClient {
        try IoTHubDeviceClient(hostName: hostName, deviceId: deviceId, moduleId: moduleId, credential: .symmetricKey(key), configuration: configuration, logger: logger)
    }

    /// `create_from_x509_certificate`.
    public static func fromX509Certificate(
        _ credential: X509Credential, hostName: String, deviceId: String, moduleId: String? = nil,
        configuration: DeviceClientConfiguration = DeviceClientConfiguration(), logger: Logger = Logger(label: "iothub-device")
    ) throws(IoTHubError) -> IoTHubDeviceClient {
        try IoTHubDeviceClient(hostName: hostName, deviceId: deviceId, moduleId: moduleId, credential: .x509(credential), configuration: configuration, logger: logger)
    }

    /// Host, device and module of a token's resource URI (`{host}/devices/{d}[/modules/{m}]`).
    static func identity(of token: SASToken) throws(IoTHubError) -> (String, String, String?) {
        let parts = token.resourceURI.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3 || parts.count == 5, parts[1] == "devices", !parts[0].isEmpty, !parts[2].isEmpty,
              parts.count == 3 || (parts[3] == "modules" && !parts[4].isEmpty)
        else { throw .valueError(field: "sastoken", reason: "its resource '\(token.resourceURI)' is not {host}/devices/{id}[/modules/{id}]") }
        return (parts[0], parts[2], parts.count == 5 ? parts[4] : nil)
    }

    private static func check(_ token: SASToken, hostName: String, deviceId: String, moduleId: String?) throws(IoTHubError) {
        let (tokenHost, tokenDevice, tokenModule) = try identity(of: token)
        guard tokenHost.lowercased() == hostName.lowercased() else { throw .valueError(field: "sastoken", reason: "is for hub \(tokenHost), not \(hostName)") }
        guard tokenDevice == deviceId else { throw .valueError(field: "sastoken", reason: "is for device \(tokenDevice), not \(deviceId)") }
        guard tokenModule == moduleId else {
            throw .valueError(field: "sastoken", reason: tokenModule == nil ? "is for a device, not a module" : "is for module \(tokenModule ?? "")")
        }
        guard !token.isExpired() else { throw .valueError(field: "sastoken", reason: "has already expired") }
    }

    /// A client dropped without `shutdown` still closes its connection: on another task, so
    /// the MQTT network thread is never asked to wait for itself.
    deinit {
        let leftovers = state.withLockedValue { state in
            [state.reconnectTask, state.renewalTask, state.tokenSignalTask].forEach { $0?.cancel() }
            return state.mqtt
        }
        if let leftovers {
            Task.detached { await leftovers.disconnect() }
        }
    }

    // MARK: Connection

    /// Whether the client is connected now.
    public var isConnected: Bool {
        state.withLockedValue { $0.phase == .connected }
    }

    /// How many connection attempts the client has made while reconnecting — after losing the
    /// connection, or to renew its credentials — failed ones included. Each reconnection
    /// (`reconnecting`, then `connected`) takes one or more of them.
    public var reconnectionAttempts: Int {
        state.withLockedValue { $0.reconnectionAttempts }
    }

    /// The connection state, since when, the last error, the token expiry and the kind of
    /// credential, for status reports.
    public var status: ClientStatus {
        state.withLockedValue { state in
            ClientStatus(
                state: Self.publicState(state.phase), since: state.since, lastError: state.lastError, tokenExpiry: state.tokenExpiry,
                credential: state.credential.kind)
        }
    }

    /// Connects (the seed's `connect`). Concurrent calls share one attempt.
    public func connect() async throws(IoTHubError) {
        let reconnecting = state.withLockedValue { $0.phase == .reconnecting && $0.connecting == nil && $0.reconnectTask != nil }
        if reconnecting {
            // The client is already reconnecting on its own: wait for that instead of racing it.
            guard try await waitUntilConnected() else {
                throw state.withLockedValue { $0.lastError } ?? .connectionFailedError("the client could not reconnect")
            }
            return
        }
        let task: Task<Result<Void, IoTHubError>, Never>? = try state.withLock { state throws(IoTHubError) in
            if let existing = state.connecting { return existing }
            switch state.phase {
            case .shutdown: throw Self.shutDownError
            case .connected: return nil
            case .connecting, .reconnecting, .disconnected: break
            }
            if state.phase == .disconnected {
                state.phase = .connecting
                state.since = Date()
            }
            let task = Task { await self.establish(reconnect: false) }
            state.connecting = task
            return task
        }
        guard let task else { return }
        try await task.value.get()
    }

    /// Disconnects (the seed's `disconnect`). Operations still waiting fail with
    /// `OperationCancelled`; the client can connect again later.
    public func disconnect() async {
        let (mqtt, tasks) = state.withLockedValue { state -> (MosquittoClient?, [Task<Void, Never>]) in
            guard state.phase != .shutdown else { return (nil, []) }
            let tasks = [state.reconnectTask, state.renewalTask].compactMap { $0 }
            state.reconnectTask = nil
            state.renewalTask = nil
            let mqtt = state.mqtt
            state.mqtt = nil
            state.subscribed = []
            return (mqtt, tasks)
        }
        tasks.forEach { $0.cancel() }
        await mqtt?.disconnect()
        closeTunnel()
        // A connection attempt still waiting for its CONNACK ends now, not at its timeout.
        resumeConnack(-1)
        let cancelled = IoTHubError.operationCancelled("the client disconnected")
        mqtt?.failPending(with: cancelled, publishes: true)
        twinResponses.failAll(with: cancelled)
        transition(to: .disconnected, reason: nil, unless: .shutdown)
    }

    /// Disconnects for good (the seed's `shutdown`): afterwards every operation throws
    /// `ClientError`, every stream ends, and `disconnect` does nothing.
    public func shutdown() async {
        await disconnect()
        state.withLockedValue { state in
            state.tokenSignalTask?.cancel()
            state.tokenSignalTask = nil
        }
        transition(to: .shutdown, reason: nil)
        for broadcaster in [messageStreams as any FinishableBroadcaster, methodStreams, desiredStreams, stateStreams, errorStreams, tokenStreams] {
            broadcaster.finish()
        }
    }

    /// Throws `ClientError` once the client has been shut down: the first check of every operation.
    private func checkNotShutDown() throws(IoTHubError) {
        try state.withLock { state throws(IoTHubError) in try Self.checkNotShutDown(state) }
    }

    private static func checkNotShutDown(_ state: State) throws(IoTHubError) {
        if state.phase == .shutdown { throw shutDownError }
    }

    private static let shutDownError = IoTHubError.clientError("the client has been shut down")

    /// One connection attempt: TCP, TLS, CONNECT, CONNACK; then subscriptions and follow-ups.
    private func establish(reconnect: Bool) async -> Result<Void, IoTHubError> {
        let result = await attempt(reconnect: reconnect)
        state.withLockedValue { $0.connecting = nil }
        switch result {
        case .success:
            transition(to: .connected, reason: nil)
            afterConnect()
        case .failure(let error):
            if !reconnect { transition(to: .disconnected, reason: error, unless: .shutdown) }
        }
        return result
    }

    private func attempt(reconnect: Bool) async -> Result<Void, IoTHubError> {
        let prepared: (MosquittoClient, String?, Bool)
        do throws(IoTHubError) {
            prepared = try state.withLock { state throws(IoTHubError) -> (MosquittoClient, String?, Bool) in
                try Self.checkNotShutDown(state)
                if state.phase == .reconnecting { state.reconnectionAttempts += 1 }
                let reusing = state.mqtt != nil
                let mqtt: MosquittoClient
                if let existing = state.mqtt {
                    mqtt = existing
                } else {
                    // Through a tunnel, TLS is the tunnel's: libmosquitto speaks plain MQTT to it.
                    mqtt = try MosquittoClient(
                        clientId: MQTTIdentity(hostName: hostName, deviceId: deviceId, moduleId: moduleId).clientId,
                        tls: tunnelPlan == nil ? tls : nil, maximumInflight: configuration.maximumInflightMessages,
                        acknowledgementTimeout: configuration.operationTimeout
                    ) { [weak self] event in self?.handle(event) }
                    state.mqtt = mqtt
                }
                let secret = try self.password(for: &state)
                return (mqtt, secret, reusing)
            }
        } catch {
            return .failure(error)
        }
        notifyState()
        let (mqtt, password, reusing) = prepared
        var host = configuration.gatewayHostName ?? hostName
        var port = configuration.mqttPort
        var endpoint = hostAndPort(host, port)
        if let tunnelPlan, let socketDirectory {
            endpoint = tunnelPlan.description
            // The previous attempt's tunnel goes first: the new one listens at the same path
            // (libmosquitto reconnects to the address it was given).
            closeTunnel()
            do throws(IoTHubError) {
                let tunnel = try await MQTTTunnel.open(tunnelPlan, socketPath: socketDirectory.socketPath)
                state.withLockedValue { $0.tunnel = tunnel }
            } catch {
                return .failure(error)
            }
            // libmosquitto takes a port of 0 as "the host is a unix socket path".
            host = socketDirectory.socketPath
            port = 0
        }
        let username = MQTTIdentity(hostName: hostName, deviceId: deviceId, moduleId: moduleId, productInfo: configuration.productInfo).username
        let (connectHost, connectPort) = (host, port)
        let returnCode: Int32
        do throws(IoTHubError) {
            let configuration = self.configuration
            returnCode = try await awaitConnack { () async throws(IoTHubError) in
                try await mqtt.connect(
                    host: connectHost, port: connectPort, keepAlive: configuration.keepAlive, username: username,
                    password: password, reconnect: reusing)
            }
        } catch {
            await mqtt.stopLoop()
            return .failure(error)
        }
        switch returnCode {
        case 0:
            // A disconnect() or shutdown() that ran while this attempt was under way wins: the
            // new connection is closed rather than left behind.
            let stillWanted = state.withLockedValue { $0.mqtt === mqtt && $0.phase != .disconnected && $0.phase != .shutdown }
            guard stillWanted else {
                await mqtt.disconnect()
                return .failure(.operationCancelled("the client was disconnected while connecting"))
            }
            mqtt.openForPublishing()
            return .success(())
        case 4, 5:
            await mqtt.disconnect()
            return .failure(.credentialError("the hub refused the credentials of \(MQTTIdentity(hostName: hostName, deviceId: deviceId, moduleId: moduleId).clientId) (CONNACK \(returnCode))"))
        case -1:
            await mqtt.stopLoop()
            let reason = state.withLockedValue { state in
                defer { state.connectionEndReason = nil }
                return state.connectionEndReason
            }
            return .failure(.connectionFailedError(reason.map { "cannot connect to \(endpoint): \($0)" } ?? "the connection to \(endpoint) closed before the hub answered CONNECT"))
        case -2:
            await mqtt.disconnect()
            return .failure(.operationTimeout("no CONNACK from \(endpoint) within \(configuration.operationTimeout)"))
        default:
            await mqtt.disconnect()
            return .failure(.connectionFailedError("the hub refused the connection (CONNACK \(returnCode))"))
        }
    }

    /// Closes the tunnel of the last connection attempt, if there is one.
    private func closeTunnel() {
        state.withLockedValue { state in
            defer { state.tunnel = nil }
            return state.tunnel
        }?.close()
    }

    /// Installs the CONNACK waiter, runs `connect`, and waits for the CONNACK's return code
    /// (-1: the connection closed first, -2: timed out).
    private func awaitConnack(_ connect: @escaping @Sendable () async throws(IoTHubError) -> Void) async throws(IoTHubError) -> Int32 {
        let timeout = configuration.operationTimeout
        let attemptId = state.withLockedValue { state -> Int in
            state.lastAttemptId += 1
            return state.lastAttemptId
        }
        let connectFailure = NIOLockedValueBox<IoTHubError?>(nil)
        var timer: Task<Void, Never>?
        // The waiter is in place before CONNECT goes out, so the CONNACK cannot be missed.
        let code: Int32 = await withCheckedContinuation { continuation in
            let previous = state.withLockedValue { state in
                defer { state.connackWaiter = (attemptId, continuation) }
                return state.connackWaiter
            }
            previous?.continuation.resume(returning: -1)
            timer = Task {
                try? await Task.sleep(for: timeout)
                if !Task.isCancelled { self.resumeConnack(-2, attempt: attemptId) }
            }
            Task {
                do throws(IoTHubError) {
                    try await connect()
                } catch {
                    connectFailure.withLockedValue { $0 = error }
                    self.resumeConnack(-3, attempt: attemptId)
                }
            }
        }
        timer?.cancel()
        if code == -3, let error = connectFailure.withLockedValue({ $0 }) { throw error }
        return code
    }

    /// Completes the waiting connect with a CONNACK code; `attempt` limits it to one attempt.
    private func resumeConnack(_ code: Int32, attempt: Int? = nil) {
        state.withLockedValue { state -> CheckedContinuation<Int32, Never>? in
            guard let waiter = state.connackWaiter, attempt == nil || waiter.id == attempt else { return nil }
            state.connackWaiter = nil
            return waiter.continuation
        }?.resume(returning: code)
    }

    private func password(for state: inout State) throws(IoTHubError) -> String? {
        switch state.credential {
        case .symmetricKey(let key):
            let token = try SASToken(
                resourceURI: SASToken.resourceURI(hostName: hostName, deviceId: deviceId, moduleId: moduleId), key: key,
                timeToLive: configuration.sasTokenTimeToLive)
            state.tokenExpiry = token.expiryDate
            return token.string
        case .sasToken(let token):
            guard !token.isExpired() else { throw .credentialError("the SAS token expired; give a new one with update_sastoken") }
            state.tokenExpiry = token.expiryDate
            return token.string
        case .x509:
            state.tokenExpiry = nil
            return nil
        }
    }

    private func handle(_ event: MQTTEvent) {
        switch event {
        case .connected(let returnCode):
            resumeConnack(returnCode)
        case .disconnected(let requested, let reason):
            let waiting = state.withLockedValue { state -> Bool in
                if state.connackWaiter != nil, let reason { state.connectionEndReason = reason }
                return state.connackWaiter != nil
            }
            if waiting {
                resumeConnack(-1)
            } else if !requested {
                connectionLost()
            }
        case .message(let topic, let payload):
            route(topic: topic, payload: payload)
        }
    }

    private func connectionLost() {
        var error = IoTHubError.connectionDroppedError("the connection to the hub was lost")
        let lost = state.withLockedValue { state -> (retry: Bool, connectedFor: TimeInterval)? in
            guard state.phase == .connected else { return nil }
            state.subscribed = []
            state.renewalTask?.cancel()
            state.renewalTask = nil
            return (configuration.connectionRetry, Date().timeIntervalSince(state.since))
        }
        guard let (retry, connectedFor) = lost else { return }
        // A connection the hub ends right after accepting it is usually taken over by another
        // client with the same identity (IoT Hub closes the older one). Reconnecting at once
        // would take it back, and both would trade the connection as fast as they can: wait the
        // retry interval instead, and say why.
        let shortLived = connectedFor < Self.shortLivedConnection
        if shortLived {
            error = .connectionDroppedError(
                "the hub closed the connection \(Int(connectedFor * 1000)) ms after accepting it; is another client connected as \(MQTTIdentity(hostName: hostName, deviceId: deviceId, moduleId: moduleId).clientId)?")
            logger.warning("short-lived connection", metadata: ["error": "\(error)"])
        }
        errorStreams.yield(error)
        if retry {
            transition(to: .reconnecting, reason: error)
            startReconnecting(immediately: !shortLived)
        } else {
            transition(to: .disconnected, reason: error)
            state.withLockedValue { $0.mqtt }?.failPending(with: error, publishes: true)
            twinResponses.failAll(with: error)
        }
    }

    /// A connection that ends sooner than this after its CONNACK is not reconnected at once.
    static let shortLivedConnection: TimeInterval = 1

    private func startReconnecting(immediately: Bool) {
        let task = Task { [weak self] in
            var first = immediately
            while let self, !Task.isCancelled {
                if !first {
                    try? await Task.sleep(for: configuration.connectionRetryInterval)
                    if Task.isCancelled { return }
                }
                first = false
                await state.withLockedValue { $0.mqtt }?.stopLoop()
                switch await establish(reconnect: true) {
                case .success:
                    state.withLockedValue { $0.reconnectTask = nil }
                    return
                case .failure(let error):
                    errorStreams.yield(error)
                    if case .credentialError = error {
                        state.withLockedValue { $0.reconnectTask = nil }
                        transition(to: .disconnected, reason: error, unless: .shutdown)
                        state.withLockedValue { $0.mqtt }?.failPending(with: error, publishes: true)
                        twinResponses.failAll(with: error)
                        return
                    }
                    logger.info("reconnect failed; retrying", metadata: ["error": "\(error)"])
                }
            }
        }
        state.withLockedValue { $0.reconnectTask = task }
    }

    /// After every (re)connect: subscribe what is enabled, schedule the token renewal, check the
    /// desired properties.
    private func afterConnect() {
        Task {
            await resubscribe()
            if configuration.ensureDesiredProperties, state.withLockedValue({ $0.enabled.contains(.desiredProperties) }) {
                await refreshDesiredProperties()
            }
        }
        scheduleRenewal()
    }

    private func scheduleRenewal() {
        let (credential, expiry) = state.withLockedValue { ($0.credential, $0.tokenExpiry) }
        guard case .symmetricKey = credential, let expiry else { return }
        let margin = min(120, Double(configuration.sasTokenTimeToLive) / 2)
        let delay = max(0, expiry.timeIntervalSinceNow - margin)
        let task = Task { [weak self] in
            try? await Task.sleep(for: .milliseconds(Int64(delay * 1000)))
            guard !Task.isCancelled else { return }
            await self?.reauthorize()
        }
        state.withLockedValue { state in
            state.renewalTask?.cancel()
            state.renewalTask = task
        }
    }

    /// Reconnects with fresh credentials (SAS renewal, `update_sastoken`).
    private func reauthorize() async {
        // The renewal is registered as the connect in progress, so a concurrent connect() joins
        // it instead of starting a second attempt on the same handle.
        let task = state.withLockedValue { state -> Task<Result<Void, IoTHubError>, Never>? in
            guard state.phase == .connected, state.connecting == nil, let mqtt = state.mqtt else { return nil }
            state.phase = .reconnecting
            state.since = Date()
            state.subscribed = []
            let task = Task {
                await mqtt.disconnect()
                return await self.establish(reconnect: true)
            }
            state.connecting = task
            return task
        }
        guard let task else { return }
        notifyState()
        logger.info("renewing the connection's credentials")
        if case .failure(let error) = await task.value {
            errorStreams.yield(error)
            if case .credentialError = error {
                transition(to: .disconnected, reason: error, unless: .shutdown)
            } else if configuration.connectionRetry {
                startReconnecting(immediately: false)
            } else {
                transition(to: .disconnected, reason: error, unless: .shutdown)
            }
        }
    }

    private func ensureConnection() async throws(IoTHubError) {
        let phase = state.withLockedValue { $0.phase }
        switch phase {
        case .connected, .reconnecting:
            return
        case .shutdown:
            throw Self.shutDownError
        case .connecting:
            try await connect()
        case .disconnected:
            guard configuration.autoConnect else { throw .noConnectionError("the client is not connected and auto_connect is off") }
            try await connect()
        }
    }

    private func transition(to phase: Phase, reason: IoTHubError?, unless blocked: Phase? = nil) {
        let changed = state.withLockedValue { state -> Bool in
            if let blocked, state.phase == blocked { return false }
            guard state.phase != phase else { return false }
            state.phase = phase
            state.since = Date()
            if let reason { state.lastError = reason }
            return true
        }
        if changed { notifyState(reason: reason) }
    }

    private func notifyState(reason: IoTHubError? = nil) {
        let (phase, since) = state.withLockedValue { ($0.phase, $0.since) }
        guard phase != .shutdown else { return }
        stateStreams.yield(ConnectionStateChange(state: Self.publicState(phase), since: since, reason: reason))
    }

    private static func publicState(_ phase: Phase) -> ConnectionState {
        switch phase {
        case .disconnected, .shutdown: .disconnected
        case .connecting: .connecting
        case .connected: .connected
        case .reconnecting: .reconnecting
        }
    }

    /// Connection state changes (the seed's `on_connection_state_change`).
    public func connectionStateChanges() -> AsyncStream<ConnectionStateChange> {
        stateStreams.stream()
    }

    /// Errors that happened in the background, outside any call (the seed's `on_background_exception`).
    public func backgroundErrors() -> AsyncStream<IoTHubError> {
        errorStreams.stream()
    }

    /// Yields 120 s before a user-supplied SAS token expires (the seed's `on_new_sastoken_required`).
    public func newSASTokenRequired() -> AsyncStream<Void> {
        tokenStreams.stream()
    }

    // MARK: Subscriptions

    private func filter(for feature: Feature) -> String {
        switch feature {
        case .cloudToDevice:
            if let moduleId { return TopicFilter.moduleInputs(deviceId: deviceId, moduleId: moduleId) }
            return TopicFilter.cloudToDevice(deviceId: deviceId)
        case .methods: return TopicFilter.methodRequests
        case .twinResponses: return TopicFilter.twinResponses
        case .desiredProperties: return TopicFilter.desiredPropertiesPatches
        }
    }

    /// Subscribes to `feature` on the current connection if that has not happened yet.
    private func ensureSubscribed(_ features: [Feature]) async throws(IoTHubError) {
        let (mqtt, missing) = state.withLockedValue { state -> (MosquittoClient?, [Feature]) in
            features.forEach { state.enabled.insert($0) }
            guard state.phase == .connected else { return (nil, []) }
            return (state.mqtt, features.filter { !state.subscribed.contains($0) })
        }
        guard let mqtt, !missing.isEmpty else { return }
        let timeout = configuration.operationTimeout
        let filters = missing.map(filter(for:))
        let granted = try await withTimeout(timeout, timeoutError: { .operationTimeout("no SUBACK from the hub within \(timeout)") }) { () async throws(IoTHubError) -> [Int32] in
            try await mqtt.subscribe(filters)
        }
        let refused = zip(missing, granted).filter { $0.1 == 0x80 }.map { filter(for: $0.0) }
        guard refused.isEmpty else { throw .serviceError(status: 403, message: "the hub refused the subscription to \(refused.joined(separator: ", "))") }
        state.withLockedValue { state in missing.forEach { state.subscribed.insert($0) } }
    }

    private func resubscribe() async {
        let enabled = state.withLockedValue { Array($0.enabled) }
        guard !enabled.isEmpty else { return }
        do throws(IoTHubError) {
            try await ensureSubscribed(enabled)
        } catch {
            errorStreams.yield(error)
        }
    }

    private func enableInBackground(_ feature: Feature) {
        state.withLockedValue { _ = $0.enabled.insert(feature) }
        Task {
            do throws(IoTHubError) {
                try await ensureConnectionIfAllowed()
                try await ensureSubscribed([feature])
                if feature == .desiredProperties { await refreshDesiredProperties() }
            } catch {
                errorStreams.yield(error)
            }
        }
    }

    /// Connects for a listener only when auto-connect allows it; otherwise the subscription
    /// happens at the next connect.
    private func ensureConnectionIfAllowed() async throws(IoTHubError) {
        if configuration.autoConnect || isConnected { try await ensureConnection() }
    }

    // MARK: Telemetry and messages

    /// Sends a telemetry message (the seed's `send_message`) and returns when the hub has
    /// acknowledged it. Throws `OperationTimeout` when no acknowledgement comes within the
    /// operation timeout (the message then stays queued and may still reach the hub, e.g. after
    /// a reconnect: not known to be delivered rather than not delivered).
    public func send(_ message: Message) async throws(IoTHubError) {
        try checkNotShutDown()
        let topic = try telemetryTopic(for: message)
        try await ensureConnection()
        try await publish(topic: topic, payload: message.payload)
    }

    /// The topic to send `message` on, once it passed the checks made before anything is sent:
    /// its size (IoT Hub's limit) and its topic's length (MQTT's).
    func telemetryTopic(for message: Message) throws(IoTHubError) -> String {
        try message.validateSize()
        return try TelemetryTopic(deviceId: deviceId, moduleId: moduleId, message: message).validatedName()
    }

    /// Sends messages in their order, pipelined: all are handed to the MQTT connection one after
    /// the other, without waiting for acknowledgements in between. Returns one result per
    /// message, in order; each succeeds or fails on its own (a message over the size limit fails
    /// alone, the others are still sent).
    public func send(_ messages: [Message]) async -> [Result<Void, IoTHubError>] {
        do throws(IoTHubError) {
            try checkNotShutDown()
        } catch {
            return messages.map { _ in .failure(error) }
        }
        var results = [Result<Void, IoTHubError>?](repeating: nil, count: messages.count)
        var pending: [(index: Int, topic: String, payload: Data)] = []
        pending.reserveCapacity(messages.count)
        for (index, message) in messages.enumerated() {
            do throws(IoTHubError) {
                pending.append((index, try telemetryTopic(for: message), message.payload))
            } catch {
                results[index] = .failure(error)
            }
        }
        while !pending.isEmpty {
            do throws(IoTHubError) {
                try await ensureConnection()
                guard let mqtt = state.withLockedValue({ $0.mqtt }) else { throw .noConnectionError("the client is not connected") }
                let outcomes = await mqtt.publish(batch: pending.map { ($0.topic, $0.payload) })
                var refused: [(index: Int, topic: String, payload: Data)] = []
                for (entry, outcome) in zip(pending, outcomes) {
                    if case .failure(.noConnectionError) = outcome { refused.append(entry) } else { results[entry.index] = outcome }
                }
                pending = refused
                // Nothing is handed to libmosquitto while a connection is being made (renewal,
                // reconnect): the rest go, in order, over the new connection.
                if !pending.isEmpty, try await !waitUntilConnected() {
                    throw .noConnectionError("the client is not connected")
                }
            } catch {
                for entry in pending { results[entry.index] = .failure(error) }
                pending = []
            }
        }
        return results.map { $0 ?? .failure(.clientError("the message was not sent")) }
    }

    /// Sends a message to an output of this module (the seed's `send_message_to_output`).
    public func send(_ message: Message, toOutput output: String) async throws(IoTHubError) {
        try checkNotShutDown()
        guard moduleId != nil else { throw .clientError("outputs belong to modules; this is a device client") }
        guard !output.isEmpty else { throw .valueError(field: "output_name", reason: "is empty") }
        var message = message
        message.outputName = output
        try await send(message)
    }

    private func publish(topic: String, payload: Data) async throws(IoTHubError) {
        while true {
            guard let mqtt = state.withLockedValue({ $0.mqtt }) else {
                throw .noConnectionError("the client is not connected")
            }
            do {
                try await mqtt.publish(topic: topic, payload: payload)
                return
            } catch .noConnectionError(let detail) {
                // Nothing is handed to libmosquitto while a connection is being made (renewal,
                // reconnect); wait for the new connection and hand the message over then.
                guard try await waitUntilConnected() else { throw .noConnectionError(detail) }
            }
        }
    }

    /// Waits while the client is connecting or reconnecting. Returns whether it is connected;
    /// throws `OperationTimeout` if that takes longer than the operation timeout.
    private func waitUntilConnected() async throws(IoTHubError) -> Bool {
        let deadline = ContinuousClock.now + configuration.operationTimeout
        while ContinuousClock.now < deadline {
            switch state.withLockedValue({ $0.phase }) {
            case .connected: return true
            case .disconnected, .shutdown: return false
            case .connecting, .reconnecting: break
            }
            do {
                try await Task.sleep(for: .milliseconds(10))
            } catch {
                throw .operationCancelled("the caller stopped waiting")
            }
        }
        throw .operationTimeout("the client did not reconnect within \(configuration.operationTimeout)")
    }

    /// Cloud-to-device messages, or a module's input messages (the seed's
    /// `on_message_received`). Listening subscribes; each listener gets every message.
    public func messages() -> AsyncStream<Message> {
        let stream = messageStreams.stream()
        enableInBackground(.cloudToDevice)
        return stream
    }

    // MARK: Direct methods

    /// Direct-method requests (the seed's `on_method_request_received`).
    public func methodRequests() -> AsyncStream<MethodRequest> {
        let stream = methodStreams.stream()
        enableInBackground(.methods)
        return stream
    }

    /// Answers a method request (the seed's `send_method_response`).
    public func respond(_ response: MethodResponse) async throws(IoTHubError) {
        try checkNotShutDown()
        if !response.payload.isEmpty { _ = try JSONValue(parsing: response.payload) }
        try await ensureConnection()
        try await publish(topic: response.topic.name, payload: response.payload.isEmpty ? Data("null".utf8) : response.payload)
    }

    // MARK: Twin

    /// Reads the twin (the seed's `get_twin`).
    public func twin() async throws(IoTHubError) -> Twin {
        let response = try await twinRequest(.get, payload: Data(" ".utf8))
        guard response.status == 200 else { throw Self.twinError(response) }
        return try Twin(parsing: response.payload)
    }

    /// Patches the reported properties (the seed's `patch_twin_reported_properties`); `null`
    /// deletes. Returns the new reported `$version`.
    @discardableResult
    public func updateReportedProperties(_ patch: [String: JSONValue]) async throws(IoTHubError) -> Int {
        let response = try await twinRequest(.patchReportedProperties, payload: JSONValue.object(patch).encoded())
        guard (200..<300).contains(response.status) else { throw Self.twinError(response) }
        guard let version = response.version else { throw .clientError("the hub did not say the new reported version") }
        return version
    }

    /// Desired-property patches, each a JSON object with `$version` (the seed's
    /// `on_twin_desired_properties_patch_received`).
    public func desiredPropertiesPatches() -> AsyncStream<JSONValue> {
        let stream = desiredStreams.stream()
        enableInBackground(.desiredProperties)
        return stream
    }

    private func twinRequest(_ operation: TwinRequestTopic.Operation, payload: Data) async throws(IoTHubError) -> TwinReply {
        try checkNotShutDown()
        try await ensureConnection()
        try await ensureSubscribed([.twinResponses])
        let requestId = RequestID.make()
        // Announced before the request goes out: the answer may come before the wait.
        twinResponses.expect(requestId)
        do {
            try await publish(topic: TwinRequestTopic(operation, requestId: requestId).name, payload: payload)
        } catch {
            twinResponses.forget(requestId)
            throw error
        }
        let timeout = configuration.operationTimeout
        return try await withTimeout(timeout, timeoutError: { .operationTimeout("no answer from the hub within \(timeout)") }) { () async throws(IoTHubError) in
            try await self.twinResponses.reply(to: requestId) { .operationCancelled("the caller stopped waiting") }
        }
    }

    private static func twinError(_ response: TwinReply) -> IoTHubError {
        .serviceError(status: response.status, message: String(decoding: response.payload, as: UTF8.self))
    }

    /// With `ensure_desired_properties`: reads the twin and delivers the desired properties as a
    /// patch if their version moved since the last one seen.
    private func refreshDesiredProperties() async {
        do throws(IoTHubError) {
            let twin = try await twin()
            let deliver = state.withLockedValue { state -> Bool in
                defer { state.lastDesiredVersion = twin.desired.version }
                guard let last = state.lastDesiredVersion else { return false }
                return last != twin.desired.version
            }
            if deliver { desiredStreams.yield(twin.desired.json) }
        } catch {
            errorStreams.yield(error)
        }
    }

    // MARK: Routing

    private func route(topic: String, payload: Data) {
        if let response = TwinResponseTopic(parsing: topic) {
            twinResponses.complete(response.requestId, with: .success(TwinReply(status: response.status, version: response.version, payload: payload)))
        } else if let request = MethodRequest(topic: topic, payload: payload) {
            methodStreams.yield(request)
        } else if let patch = DesiredPropertiesPatchTopic(parsing: topic) {
            guard let json = try? JSONValue(parsing: payload), json.objectValue != nil else {
                errorStreams.yield(.clientError("the hub sent a desired-properties patch that is not a JSON object"))
                return
            }
            state.withLockedValue { $0.lastDesiredVersion = patch.version }
            desiredStreams.yield(json)
        } else if moduleId == nil, let message = CloudToDeviceTopic(parsing: topic), message.deviceId == deviceId {
            messageStreams.yield(Message(payload: payload, propertyBag: message.properties))
        } else if let input = ModuleInputTopic(parsing: topic), input.deviceId == deviceId, input.moduleId == moduleId {
            messageStreams.yield(Message(payload: payload, propertyBag: input.properties, inputName: input.inputName))
        } else {
            logger.debug("message on an unexpected topic", metadata: ["topic": "\(topic)"])
        }
    }

    // MARK: SAS tokens

    /// Replaces a user-supplied SAS token (the seed's `update_sastoken`) and reconnects with it
    /// if connected.
    public func updateSASToken(_ text: String) async throws(IoTHubError) {
        try checkNotShutDown()
        let token = try SASToken(parsing: text)
        try state.withLock { state throws(IoTHubError) in
            guard case .sasToken = state.credential else {
                throw .clientError("update_sastoken needs a client created from a SAS token")
            }
            try Self.check(token, hostName: hostName, deviceId: deviceId, moduleId: moduleId)
            state.credential = .sasToken(token)
        }
        scheduleTokenSignal(for: token)
        await reauthorize()
    }

    private func scheduleTokenSignal(for token: SASToken) {
        let delay = max(0, token.expiryDate.timeIntervalSinceNow - 120)
        let task = Task { [weak self] in
            try? await Task.sleep(for: .milliseconds(Int64(delay * 1000)))
            guard !Task.isCancelled, let self else { return }
            let stillCurrent = state.withLockedValue { state -> Bool in
                if case .sasToken(let current) = state.credential { return current == token }
                return false
            }
            if stillCurrent { tokenStreams.yield(()) }
        }
        state.withLockedValue { state in
            state.tokenSignalTask?.cancel()
            state.tokenSignalTask = task
        }
    }

    // MARK: File upload

    /// Asks the hub where to upload a file (the seed's `get_storage_info_for_blob`). A name
    /// blob storage would not read as written (``BlobName/validate(_:)``) is refused first.
    public func storageInfo(forBlob blobName: String) async throws(IoTHubError) -> StorageInfo {
        try checkNotShutDown()
        try BlobName.validate(blobName)
        let body = JSONValue.object(["blobName": .string(blobName)]).encoded()
        let response = try await fileUploadRequest(path: "files", body: body)
        guard response.status == 200 else { throw Self.httpError(response) }
        do {
            return try JSONDecoder().decode(StorageInfo.self, from: response.body)
        } catch {
            throw .clientError("the hub's storage information is not what IoT Hub sends")
        }
    }

    /// Tells the hub how an upload ended (the seed's `notify_blob_upload_status`).
    public func notifyBlobUploadStatus(correlationId: String, isSuccess: Bool, statusCode: Int, statusDescription: String) async throws(IoTHubError) {
        try checkNotShutDown()
        let body = JSONValue.object([
            "correlationId": .string(correlationId), "isSuccess": .bool(isSuccess), "statusCode": .integer(Int64(statusCode)),
            "statusDescription": .string(statusDescription),
        ]).encoded()
        let response = try await fileUploadRequest(path: "files/notifications", body: body)
        guard (200..<300).contains(response.status) else { throw Self.httpError(response) }
    }

    /// Uploads a file in one call: asks the hub for a blob (``storageInfo(forBlob:)``), streams
    /// `body` (exactly `length` bytes) to blob storage as a block blob, and notifies the hub of
    /// the outcome, a failure included. Errors before the hub gave a blob are thrown as they
    /// are; later ones as ``BlobUploadFailure``.
    public func uploadBlob<Body: AsyncSequence>(
        named blobName: String, length: Int, contentType: String? = nil, body: Body
    ) async throws -> BlobUploadResult where Body.Element == Data {
        try checkNotShutDown()
        let info = try await storageInfo(forBlob: blobName)
        var headers = ["x-ms-blob-type": "BlockBlob", "x-ms-version": "2018-03-28"]
        if let contentType { headers["Content-Type"] = contentType }
        // Blob storage is another host, and the device's certificate is not for it.
        var storagePolicy = tls.policy
        storagePolicy.clientCertificate = nil
        let client = HTTPSClient(policy: storagePolicy, proxy: configuration.proxyOptions, timeoutSeconds: 3600)
        let outcome: Result<HTTPSClient.Response, IoTHubError>
        do throws(IoTHubError) {
            outcome = .success(try await client.send(method: "PUT", url: info.blobURL, headers: headers, length: length, streaming: body))
        } catch {
            outcome = .failure(error)
        }
        let (isSuccess, statusCode, description): (Bool, Int, String) =
            switch outcome {
            case .success(let response): ((200..<300).contains(response.status), response.status, String(decoding: response.body.prefix(256), as: UTF8.self))
            case .failure(let error): (false, 500, "\(error)")
            }
        do throws(IoTHubError) {
            try await notifyBlobUploadStatus(
                correlationId: info.correlationId, isSuccess: isSuccess, statusCode: statusCode,
                statusDescription: isSuccess ? "Created" : String(description.prefix(200)))
        } catch {
            if isSuccess { throw BlobUploadFailure(error: error, correlationId: info.correlationId, upstreamStatus: nil) }
            logger.warning("could not tell the hub about a failed upload", metadata: ["error": "\(error)"])
        }
        switch outcome {
        case .success where isSuccess:
            return BlobUploadResult(storageInfo: info)
        case .success(let response):
            throw BlobUploadFailure(
                error: .serviceError(status: response.status, message: String(decoding: response.body.prefix(256), as: UTF8.self)),
                correlationId: info.correlationId, upstreamStatus: response.status)
        case .failure(let error):
            throw BlobUploadFailure(error: error, correlationId: info.correlationId, upstreamStatus: nil)
        }
    }

    private func fileUploadRequest(path: String, body: Data) async throws(IoTHubError) -> HTTPSClient.Response {
        guard moduleId == nil else { throw .clientError("file upload is for device identities, not modules") }
        let credential = state.withLockedValue { $0.credential }
        var headers = [
            "Content-Type": "application/json", "Accept": "application/json",
            "User-Agent": PercentEncoding.encode(UserAgent.string + configuration.productInfo),
        ]
        var clientCertificate: X509Credential?
        switch credential {
        case .symmetricKey(let key):
            headers["Authorization"] = try SASToken(
                resourceURI: SASToken.resourceURI(hostName: hostName, deviceId: deviceId), key: key, timeToLive: configuration.sasTokenTimeToLive).string
        case .sasToken(let token):
            headers["Authorization"] = token.string
        case .x509(let x509):
            clientCertificate = x509
        }
        let authority = hostAndPort(configuration.gatewayHostName ?? hostName, configuration.httpsPort)
        let url = "https://\(authority)/devices/\(PercentEncoding.encode(deviceId))/\(path)?api-version=\(MQTTIdentity.apiVersion)"
        var policy = tls.policy
        policy.clientCertificate = clientCertificate
        let client = HTTPSClient(policy: policy, proxy: configuration.proxyOptions)
        return try await client.send(method: "POST", url: url, headers: headers, body: body)
    }

    private static func httpError(_ response: HTTPSClient.Response) -> IoTHubError {
        let text = String(decoding: response.body.prefix(512), as: UTF8.self)
        if response.status == 401 { return .credentialError("the hub refused the credentials: \(text)") }
        return .serviceError(status: response.status, message: text, retryAfterSeconds: response.retryAfterSeconds)
    }
}

/// A broadcaster of any element type that can be finished.
private protocol FinishableBroadcaster {
    func finish()
}

extension Broadcaster: FinishableBroadcaster {}

/// The hub's answer to a twin request.
struct TwinReply: Sendable {
    var status: Int
    var version: Int?
    var payload: Data
}
