import AsyncPrimitives
import FoundationEssentials
public import IoTHubProtocol
import NIOConcurrencyHelpers

// MARK: Connection

/// The client's side of the connection lifecycle: it feeds events to the
/// ``ConnectionStateMachine`` (calls, MQTT events, timers) and performs what the machine says.
extension IoTHubDeviceClient {
    /// Connects (the Python SDK's `connect`). Concurrent calls share one attempt; a call while the
    /// client reconnects on its own waits for that (at most the operation timeout) instead of
    /// racing it.
    public func connect() async throws(IoTHubError) {
        let outcome = await withCheckedContinuation { (waiter: CheckedContinuation<ConnectWaitOutcome, Never>) in
            switch changeLifecycle({ $0.connect(waiter: waiter, at: .now) }) {
            case .startAttempt(let attempt): run(attempt)
            case .joinedAttempt: break
            case .answer(let waiter, let outcome): waiter.resume(returning: outcome)
            }
        }
        switch outcome {
        case .finished(let result):
            try result.get()
        case .waitForReconnect:
            guard try await waitUntilConnected() else {
                throw lifecycle.withLockedValue { $0.lastError }
                    ?? .connectionFailedError("the client could not reconnect")
            }
        }
    }

    /// Disconnects (the Python SDK's `disconnect`). Operations still waiting fail with
    /// `OperationCancelled`; the client can connect again later.
    public func disconnect() async {
        guard case .close(let connection, let cancelledWaiters) = changeLifecycle({ $0.disconnect() }) else { return }
        let cancelled = IoTHubError.operationCancelled("the client disconnected")
        for waiter in cancelledWaiters { waiter.resume(returning: .finished(.failure(Lifecycle.overtakenError))) }
        await connection?.disconnect()
        closeTunnel()
        connection?.failPending(with: cancelled, publishes: true)
        twinResponses.failAll(with: cancelled)
        notify(changeLifecycle { $0.disconnected(at: .now) })
    }

    /// Disconnects for good (the Python SDK's `shutdown`): afterwards every operation throws
    /// `ClientError`, every stream ends, and `disconnect` does nothing. Returns once the
    /// client's background work has ended.
    public func shutdown() async {
        await disconnect()
        changeLifecycle { $0.shutDown(at: .now) }
        await background.cancelAndWait()
        // What the hub sent between the last listener going and its UNSUBSCRIBE, and no
        // listener came back for: said, not dropped silently.
        for (what, count) in [
            ("cloud-to-device messages", messageStreams.undeliveredCount),
            ("method requests", methodStreams.undeliveredCount),
        ] where count > 0 {
            logger.warning(
                "\(what) received after the last listener went were never handed to a listener",
                metadata: ["count": "\(count)"])
        }
        for broadcaster in [
            messageStreams as any FinishableBroadcaster, methodStreams, desiredStreams, stateStreams, errorStreams,
            tokenStreams,
        ] {
            broadcaster.finish()
        }
    }

    /// Connection state changes (the Python SDK's `on_connection_state_change`).
    public func connectionStateChanges() -> AsyncStream<ConnectionStateChange> {
        stateStreams.stream()
    }

    /// Errors that happened in the background, outside any call (the Python SDK's
    /// `on_background_exception`).
    public func backgroundErrors() -> AsyncStream<IoTHubError> {
        errorStreams.stream()
    }

    /// Throws `ClientError` once the client has been shut down: the first check of every operation.
    func checkNotShutDown() throws(IoTHubError) {
        if lifecycle.withLockedValue({ $0.phase }) == .shutDown { throw Lifecycle.shutDownError }
    }

    /// Makes sure an operation can use the connection: connects first when the client is
    /// disconnected (with auto-connect) or connecting; lets it go ahead while reconnecting (it
    /// waits for the new connection when it hands something over).
    func ensureConnection() async throws(IoTHubError) {
        switch lifecycle.withLockedValue({ $0.operationNeedsConnection(autoConnect: configuration.autoConnect) }) {
        case .proceed: return
        case .connect: try await connect()
        case .fail(let error): throw error
        }
    }

    /// Waits while the client is connecting, reconnecting or renewing its credentials. Returns
    /// whether it is connected then; throws `OperationTimeout` if that takes longer than the
    /// operation timeout, `OperationCancelled` if the caller is cancelled.
    func waitUntilConnected() async throws(IoTHubError) -> Bool {
        let deadline = ContinuousClock.now + configuration.operationTimeout
        while true {
            // Read before looking: a change between the look and the wait ends the wait at once.
            let generation = lifecycleChanges.generation
            switch lifecycle.withLockedValue({ $0.phase }) {
            case .connected: return true
            case .disconnected, .shutDown: return false
            case .connecting, .reconnecting, .renewingCredentials: break
            }
            guard !Task.isCancelled else { throw .operationCancelled("the caller stopped waiting") }
            let remaining = deadline - .now
            guard remaining > .zero else {
                throw .operationTimeout("the client did not reconnect within \(configuration.operationTimeout)")
            }
            await lifecycleChanges.wait(afterGeneration: generation, timeout: remaining)
        }
    }

    // MARK: Changes and actions

    /// Runs one transition of the lifecycle and wakes whoever waits for a change.
    @discardableResult
    func changeLifecycle<Action>(_ transition: (inout Lifecycle) -> Action) -> Action {
        let action = lifecycle.withLockedValue(transition)
        lifecycleChanges.signal()
        return action
    }

    /// Tells the listeners of ``connectionStateChanges()``.
    func notify(_ change: ConnectionStateChange?) {
        if let change { stateStreams.yield(change) }
    }

    /// Runs a connection attempt in the background. When the client's background work has
    /// ended (it is shut down), the attempt ends at once, answering whoever waits for it.
    func run(_ attempt: Lifecycle.AttemptStart) {
        let started = background.run { await self.runAttempt(attempt) }
        if !started {
            perform(
                changeLifecycle { $0.finishAttempt(attempt.id, result: .failure(Lifecycle.shutDownError), at: .now) })
        }
    }

    private func perform(_ action: Lifecycle.AttemptFinishedAction) {
        switch action {
        case .none:
            break
        case .connected(let change, let waiters, let lost):
            notify(change)
            if case .none = lost {
                afterConnect()
            } else {
                perform(lost)
            }
            waiters.forEach { $0.resume(returning: .finished(.success(()))) }
        case .failed(let error, let change, let waiters):
            notify(change)
            waiters.forEach { $0.resume(returning: .finished(.failure(error))) }
        case .retryLater(let error, let waiters):
            errorStreams.yield(error)
            logger.info("reconnect failed; retrying", metadata: ["error": "\(error)"])
            waiters.forEach { $0.resume(returning: .finished(.failure(error))) }
        case .gaveUp(let error, let change, let failPending, let connection, let waiters):
            errorStreams.yield(error)
            notify(change)
            if failPending {
                connection?.failPending(with: error, publishes: true)
                twinResponses.failAll(with: error)
            }
            waiters.forEach { $0.resume(returning: .finished(.failure(error))) }
        case .overtaken(let error, let report, let waiters, let next):
            if report { errorStreams.yield(error) }
            waiters.forEach { $0.resume(returning: .finished(.failure(error))) }
            if let next { run(next) }
        }
    }

    private func perform(_ action: Lifecycle.ConnectionLostAction) {
        switch action {
        case .none:
            break
        case .reconnect(let error, let change, let attempt, let shortLived):
            if shortLived { logger.warning("short-lived connection", metadata: ["error": "\(error)"]) }
            errorStreams.yield(error)
            notify(change)
            if let attempt { run(attempt) }
        case .giveUp(let error, let change, let connection, let shortLived):
            if shortLived { logger.warning("short-lived connection", metadata: ["error": "\(error)"]) }
            errorStreams.yield(error)
            notify(change)
            connection?.failPending(with: error, publishes: true)
            twinResponses.failAll(with: error)
        }
    }

    /// After every (re)connect: subscribe what is wanted, check the desired properties.
    private func afterConnect() {
        reconcileAfterConnect()
    }

    // MARK: Attempts

    /// One connection attempt, from dealing with the previous connection to the state change.
    private func runAttempt(_ attempt: Lifecycle.AttemptStart) async {
        switch attempt.purpose {
        case .connect: break
        // The connection ended: its network thread has stopped or is stopping; join it.
        case .reconnect: await attempt.previousConnection?.stopLoop()
        case .renewal:
            logger.info("renewing the connection's credentials")
            await attempt.previousConnection?.disconnect()
        }
        let result = await attemptConnection(attempt.id)
        perform(changeLifecycle { $0.finishAttempt(attempt.id, result: result, at: .now) })
    }

    /// TCP (or the tunnel), TLS, CONNECT, CONNACK.
    private func attemptConnection(_ id: Int) async -> Result<Void, IoTHubError> {
        let mqtt: MosquittoClient
        let reconnect: Bool
        let password: String?
        let renewAt: Date?
        do throws(IoTHubError) {
            let begun = try lifecycle.withLock { lifecycle throws(IoTHubError) in
                try lifecycle.beginAttempt(id, at: .now, makeConnection: makeMosquittoClient)
            }
            switch begun {
            case .abandon(let error):
                return .failure(error)
            case .proceed(let connection, let reused, let change):
                mqtt = connection
                // libmosquitto keeps the session's queued messages across a reconnect.
                reconnect = reused
                (password, renewAt) = try await credentials.connectionPassword()
                notify(change)
            }
        } catch {
            return .failure(error)
        }
        var host = configuration.gatewayHostName ?? hostName
        var port = configuration.mqttPort
        var endpoint = hostAndPort(host, port)
        if let tunnelPlan, let socketDirectory {
            endpoint = tunnelPlan.description
            // The previous attempt's tunnel goes first: the new one listens at the same path
            // (libmosquitto reconnects to the address it was given).
            closeTunnel()
            do throws(IoTHubError) {
                let opened = try await MQTTTunnel.open(tunnelPlan, socketPath: socketDirectory.socketPath)
                tunnel.withLockedValue { $0 = opened }
            } catch {
                return .failure(error)
            }
            // libmosquitto takes a port of 0 as "the host is a unix socket path".
            host = socketDirectory.socketPath
            port = 0
        }
        // From here the end of the connection or a CONNACK answers the attempt, so the CONNACK
        // cannot be missed even if it comes before the wait below begins.
        guard changeLifecycle({ $0.expectConnack(id, renewCredentialsAt: renewAt) }) else {
            return .failure(Lifecycle.overtakenError)
        }
        let username = MQTTIdentity(
            hostName: hostName, deviceId: deviceId, moduleId: moduleId, productInfo: configuration.productInfo,
            modelId: configuration.modelId
        ).username
        let outcome: ConnackOutcome
        do throws(IoTHubError) {
            try await mqtt.connect(
                host: host, port: port, keepAlive: configuration.keepAlive, username: username, password: password,
                reconnect: reconnect)
            outcome = await connackOutcome(of: id)
        } catch {
            outcome = changeLifecycle { $0.connectFailed(id, error: error) }
        }
        let timeout = configuration.operationTimeout
        // Decided and, for an accepted connection, opened under the lock, so that a
        // disconnect() either comes first (and the connection is closed) or finds it open.
        let (cleanup, result) = lifecycle.withLockedValue { lifecycle in
            let settled = lifecycle.settle(id, outcome: outcome, connection: mqtt, endpoint: endpoint, timeout: timeout)
            if case .openForPublishing(let connection) = settled.cleanup { connection.openForPublishing() }
            return settled
        }
        switch cleanup {
        case .openForPublishing: break
        case .close(let connection): await connection.disconnect()
        case .stopNetworkThread(let connection): await connection.stopLoop()
        }
        return result
    }

    /// Waits for the CONNACK of attempt `id` (at most the operation timeout).
    private func connackOutcome(of id: Int) async -> ConnackOutcome {
        let deadline = ContinuousClock.now + configuration.operationTimeout
        while true {
            let generation = lifecycleChanges.generation
            if let outcome = lifecycle.withLockedValue({ $0.takeConnackOutcome(id) }) { return outcome }
            let remaining = deadline - .now
            guard remaining > .zero, !Task.isCancelled else {
                return lifecycle.withLockedValue { $0.connackTimedOut(id) }
            }
            await lifecycleChanges.wait(afterGeneration: generation, timeout: remaining)
        }
    }

    /// The MQTT connection, made on the first attempt and reused by the next ones. Through a
    /// tunnel, TLS is the tunnel's: libmosquitto speaks plain MQTT to it.
    private func makeMosquittoClient() throws(IoTHubError) -> MosquittoClient {
        try MosquittoClient(
            clientId: MQTTIdentity(hostName: hostName, deviceId: deviceId, moduleId: moduleId).clientId,
            tls: tunnelPlan == nil ? tls : nil, maximumInflight: configuration.maximumInflightMessages,
            acknowledgementTimeout: configuration.operationTimeout,
            beforeWrite: { [weak self] in self?.keepReceivedMessages() ?? true }
        ) { [weak self] event in self?.handle(event) }
    }

    /// Closes the tunnel of the last connection attempt, if there is one.
    private func closeTunnel() {
        tunnel.withLockedValue { tunnel in
            defer { tunnel = nil }
            return tunnel
        }?.close()
    }

    // MARK: Events

    /// What libmosquitto reports, on the MQTT network thread.
    private func handle(_ event: MQTTEvent) {
        switch event {
        case .connected(let returnCode):
            changeLifecycle { $0.connackReceived(returnCode: returnCode) }
        case .disconnected(let requested, let reason):
            perform(changeLifecycle { $0.connectionEnded(requested: requested, reason: reason, at: .now) })
        case .message(let topic, let payload):
            route(topic: topic, payload: payload)
        }
    }

    /// Renews the connection's credentials if connected (`update_sastoken`), and returns when
    /// the new connection is made or has failed (its failure is reported in the background).
    func renewCredentials() async {
        _ = await withCheckedContinuation { (waiter: CheckedContinuation<ConnectWaitOutcome, Never>) in
            switch changeLifecycle({ $0.renewCredentials(waiter: waiter, at: .now) }) {
            case .notConnected(let waiter):
                waiter?.resume(returning: .finished(.success(())))
            case .startAttempt(let attempt, let change):
                notify(change)
                run(attempt)
            }
        }
    }

    // MARK: Timers

    /// The timers (reconnect, credential renewal, new-token request) as one job of the
    /// background work: it sleeps until the next one is due or the lifecycle changes, and holds
    /// the client only while it acts.
    func runTimers() -> BackgroundWork.Job {
        { [weak self, lifecycle, lifecycleChanges] in
            while !Task.isCancelled {
                let generation = lifecycleChanges.generation
                let (actions, next) = lifecycle.withLockedValue { $0.timersDue(at: .now) }
                if !actions.isEmpty {
                    guard let client = self else { return }
                    lifecycleChanges.signal()
                    client.perform(actions)
                }
                if let next {
                    await lifecycleChanges.wait(afterGeneration: generation, timeout: next - .now)
                } else {
                    await lifecycleChanges.wait(afterGeneration: generation)
                }
            }
        }
    }

    private func perform(_ actions: [Lifecycle.TimerAction]) {
        for action in actions {
            switch action {
            case .startAttempt(let attempt, let change):
                notify(change)
                run(attempt)
            case .requestNewToken:
                tokenStreams.yield(())
            }
        }
    }
}
