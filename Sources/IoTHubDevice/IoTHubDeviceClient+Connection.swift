import AsyncPrimitives
import Foundation
public import IoTHubProtocol
import NIOConcurrencyHelpers

// MARK: Connection

extension IoTHubDeviceClient {
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
    func checkNotShutDown() throws(IoTHubError) {
        try state.withLock { state throws(IoTHubError) in try Self.checkNotShutDown(state) }
    }

    private static func checkNotShutDown(_ state: State) throws(IoTHubError) {
        if state.phase == .shutdown { throw shutDownError }
    }

    static let shutDownError = IoTHubError.clientError("the client has been shut down")

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
        let prepared: (MosquittoClient, Bool)
        let password: String?
        do throws(IoTHubError) {
            prepared = try state.withLock { state throws(IoTHubError) -> (MosquittoClient, Bool) in
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
                return (mqtt, reusing)
            }
            password = try credentials.connectionPassword().password
        } catch {
            return .failure(error)
        }
        notifyState()
        let (mqtt, reusing) = prepared
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
    func closeTunnel() {
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
        guard case .symmetricKey = credentials.credential, let expiry = credentials.tokenExpiry else { return }
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
    func reauthorize() async {
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

    func ensureConnection() async throws(IoTHubError) {
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

    static func publicState(_ phase: Phase) -> ConnectionState {
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

    /// Waits while the client is connecting or reconnecting. Returns whether it is connected;
    /// throws `OperationTimeout` if that takes longer than the operation timeout.
    func waitUntilConnected() async throws(IoTHubError) -> Bool {
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
}
