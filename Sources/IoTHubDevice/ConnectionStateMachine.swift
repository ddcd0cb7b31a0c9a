import FoundationEssentials
import IoTHubProtocol

/// A point in time on the two clocks of the connection's lifecycle: the wall clock for what is
/// reported (``ConnectionStateChange/since``, token expiry) and the monotonic clock for what is
/// scheduled (the next reconnect, the credential renewal).
struct Moment: Sendable {
    var date: Date
    var instant: ContinuousClock.Instant

    static var now: Moment { Moment(date: Date(), instant: .now) }

    /// This moment `duration` later on both clocks.
    func advanced(by duration: Duration) -> Moment {
        let components = duration.components
        let seconds = Double(components.seconds) + Double(components.attoseconds) / 1e18
        return Moment(date: date.addingTimeInterval(seconds), instant: instant + duration)
    }
}

/// How the wait for the hub's CONNACK ended.
enum ConnackOutcome: Sendable, Equatable {
    /// CONNACK with return code 0.
    case accepted
    /// CONNACK with another return code (4, 5: the credentials were refused).
    case refused(returnCode: Int32)
    /// The connection ended first; `reason` when the transport could tell (a failed TLS handshake).
    case connectionClosed(reason: String?)
    /// No CONNACK within the operation timeout.
    case timedOut
    /// The TCP, TLS or tunnel connection could not be made, so no CONNECT went out.
    case connectFailed(IoTHubError)
}

/// What a `connect()` caller that had to wait is told.
enum ConnectWaitOutcome: Sendable {
    /// The attempt it waited for (started or joined) ended so.
    case finished(Result<Void, IoTHubError>)
    /// The client is reconnecting on its own: wait for that (bounded by the operation timeout)
    /// instead of racing it with a second attempt.
    case waitForReconnect
}

/// The lifecycle of the client's connection to the hub, as a value: its phase, the connection
/// attempt under way (with the callers waiting for it and its CONNACK wait), the reconnect and
/// credential-renewal schedule. Each event is a `mutating` function that returns what the client
/// must do about it; the machine itself does no I/O, takes the time as an argument, and never
/// waits, so every transition can be tested without a hub (`ConnectionStateMachineTests`).
///
/// The client keeps the machine behind one lock and performs the returned actions outside it.
/// At most one connection attempt runs at a time; attempts are numbered, and an event about an
/// attempt that is no longer the current one changes nothing.
///
/// - `Connection`: the MQTT connection the attempts (re)use (`MosquittoClient`; a stand-in in
///   tests).
/// - `Waiter`: a `connect()` caller waiting for an attempt (a continuation; a plain value in
///   tests).
struct ConnectionStateMachine<Connection: AnyObject & Sendable, Waiter: Sendable>: Sendable {
    enum Phase: Sendable, Equatable {
        /// Not connected, and not trying to.
        case disconnected
        /// Connecting at the application's request (`connect()`, or auto-connect).
        case connecting
        case connected
        /// The connection was lost: attempts follow each other with the retry interval between.
        case reconnecting
        /// The connection is being closed and made again with fresh credentials (SAS token
        /// renewal, `update_sastoken`).
        case renewingCredentials
        /// For good: every operation throws `ClientError`.
        case shutDown

        /// The state applications see.
        var reported: ConnectionState {
            switch self {
            case .disconnected, .shutDown: .disconnected
            case .connecting: .connecting
            case .connected: .connected
            case .reconnecting, .renewingCredentials: .reconnecting
            }
        }

        /// Whether the step from `self` to `next` is not a change applications see as one:
        /// renewing and reconnecting are both `reconnecting`, and were one phase before.
        func isSameStep(as next: Phase) -> Bool {
            self == next || (self.reported == .reconnecting && next.reported == .reconnecting)
        }
    }

    /// Why an attempt is made.
    enum Purpose: Sendable, Equatable {
        case connect
        case reconnect
        case renewal
    }

    /// What the client needs to run an attempt.
    struct AttemptStart: Sendable {
        let id: Int
        let purpose: Purpose
        /// The connection to deal with first: to close (a renewal) or whose network thread to
        /// join (a reconnect, after the connection ended).
        let previousConnection: Connection?
    }

    /// The state of an attempt's CONNACK wait.
    private enum ConnackWait {
        /// CONNECT has not gone out yet.
        case notExpected
        /// CONNECT went out (or is about to); nothing answered yet.
        case awaited
        /// The answer is in; the attempt has not taken it yet.
        case answered(ConnackOutcome)
        /// The attempt took this outcome.
        case settled(ConnackOutcome)
    }

    private struct Attempt {
        let id: Int
        let purpose: Purpose
        var waiters: [Waiter]
        var connack = ConnackWait.notExpected
        /// False once `disconnect()` or `shutdown()` ran during the attempt: its connection is
        /// closed rather than kept, and nothing follows it.
        var isWanted = true
        /// The connection ended after the hub accepted it, before the attempt completed.
        var lostAfterAcceptance = false
        /// When the credentials of this attempt's connection should be renewed (a SAS token
        /// the client signed itself).
        var renewCredentialsAt: Date?
    }

    /// A connection that ends sooner than this after its CONNACK is not reconnected at once.
    static var shortLivedConnection: TimeInterval { 1 }

    /// The error of every operation after `shutdown()`.
    static var shutDownError: IoTHubError { .clientError("the client has been shut down") }

    /// The error of a connect that `disconnect()` or `shutdown()` overtook.
    static var overtakenError: IoTHubError { .operationCancelled("the client was disconnected while connecting") }

    /// The MQTT client id, for messages.
    let clientId: String
    /// Whether a lost connection is made again (`connection_retry`).
    let retriesConnection: Bool
    /// The pause between reconnect attempts (`connection_retry_interval`).
    let retryInterval: Duration

    private(set) var phase = Phase.disconnected
    /// When the phase last changed (as applications see it).
    private(set) var since: Date
    private(set) var lastError: IoTHubError?
    /// The MQTT connection, made by the first attempt and reused by the next ones; nil again
    /// after `disconnect()`.
    private(set) var connection: Connection?
    /// Attempts made while reconnecting (after a loss, or to renew credentials).
    private(set) var reconnectionAttempts = 0
    /// The id of the attempt that made the current connection, while connected: what was
    /// subscribed on another connection is not subscribed on this one.
    private(set) var connectionId: Int?
    private(set) var reconnectDeadline: ContinuousClock.Instant?
    private(set) var renewalDeadline: ContinuousClock.Instant?
    /// When to ask the application for a new SAS token (one it supplied).
    private(set) var newTokenRequestDeadline: ContinuousClock.Instant?

    private var attempt: Attempt?
    /// A `connect()` made while an attempt that `disconnect()` overtook was still ending; it
    /// starts when that one has ended.
    private var queuedAttempt: Attempt?
    private var lastAttemptId = 0

    init(clientId: String, retriesConnection: Bool, retryInterval: Duration, at now: Moment) {
        self.clientId = clientId
        self.retriesConnection = retriesConnection
        self.retryInterval = retryInterval
        self.since = now.date
    }

    /// Whether an attempt is under way.
    var isAttemptInProgress: Bool { attempt != nil }

    /// The connection, while connected.
    var currentConnection: (connection: Connection, id: Int)? {
        guard phase == .connected, let connection, let connectionId else { return nil }
        return (connection, connectionId)
    }

    // MARK: connect()

    enum ConnectAction {
        /// Run this attempt; the waiter waits for it.
        case startAttempt(AttemptStart)
        /// The waiter waits for the attempt under way (or queued).
        case joinedAttempt
        /// Answer the waiter now.
        case answer(Waiter, ConnectWaitOutcome)
    }

    /// `connect()`: concurrent calls share one attempt; a call while reconnecting waits for the
    /// reconnection; a call while renewing credentials joins the renewal.
    mutating func connect(waiter: Waiter, at now: Moment) -> ConnectAction {
        switch phase {
        case .shutDown:
            return .answer(waiter, .finished(.failure(Self.shutDownError)))
        case .connected:
            return .answer(waiter, .finished(.success(())))
        case .reconnecting:
            return .answer(waiter, .waitForReconnect)
        case .connecting, .renewingCredentials:
            if queuedAttempt != nil {
                queuedAttempt?.waiters.append(waiter)
                return .joinedAttempt
            }
            if attempt != nil {
                attempt?.waiters.append(waiter)
                return .joinedAttempt
            }
            // Not seen: both phases hold an attempt. Start one rather than leave the caller waiting.
            return .startAttempt(startAttempt(.connect, waiters: [waiter]))
        case .disconnected:
            phase = .connecting
            since = now.date
            if attempt != nil {
                // A disconnect overtook the attempt, which is still ending: this one follows it.
                lastAttemptId += 1
                queuedAttempt = Attempt(id: lastAttemptId, purpose: .connect, waiters: [waiter])
                return .joinedAttempt
            }
            return .startAttempt(startAttempt(.connect, waiters: [waiter]))
        }
    }

    private mutating func startAttempt(_ purpose: Purpose, waiters: [Waiter]) -> AttemptStart {
        lastAttemptId += 1
        attempt = Attempt(id: lastAttemptId, purpose: purpose, waiters: waiters)
        return AttemptStart(id: lastAttemptId, purpose: purpose, previousConnection: connection)
    }

    // MARK: An operation needs the connection

    enum OperationAction: Equatable {
        /// Go ahead (connected, or the client is reconnecting and the operation will wait).
        case proceed
        /// Connect first.
        case connect
        case fail(IoTHubError)
    }

    /// What an operation that needs the connection does first.
    func operationNeedsConnection(autoConnect: Bool) -> OperationAction {
        switch phase {
        case .connected, .reconnecting, .renewingCredentials: .proceed
        case .shutDown: .fail(Self.shutDownError)
        case .connecting: .connect
        case .disconnected:
            autoConnect ? .connect : .fail(.noConnectionError("the client is not connected and auto_connect is off"))
        }
    }

    // MARK: Running an attempt

    enum BeginAttemptAction {
        /// Connect `connection` (`reused`: it was made by an earlier attempt); tell applications
        /// `change` (every attempt is announced).
        case proceed(Connection, reused: Bool, change: ConnectionStateChange)
        /// Do not connect: the attempt ends with `error`.
        case abandon(IoTHubError)
    }

    /// The attempt begins: it counts as a reconnection attempt unless it is a first connect,
    /// and makes the MQTT connection if there is none yet (`makeConnection` runs under the
    /// client's lock; it only creates an object).
    mutating func beginAttempt<Failure: Error>(
        _ id: Int, at now: Moment, makeConnection: () throws(Failure) -> Connection
    ) throws(Failure) -> BeginAttemptAction {
        guard attempt?.id == id else { return .abandon(Self.overtakenError) }
        if phase == .shutDown { return .abandon(Self.shutDownError) }
        guard attempt?.isWanted == true else { return .abandon(Self.overtakenError) }
        if attempt?.purpose != .connect { reconnectionAttempts += 1 }
        let reused = self.connection != nil
        let connection: Connection
        if let existing = self.connection {
            connection = existing
        } else {
            connection = try makeConnection()
            self.connection = connection
        }
        return .proceed(connection, reused: reused, change: ConnectionStateChange(state: phase.reported, since: since))
    }

    /// CONNECT is about to go out: from now on the end of the connection or a CONNACK answers
    /// the attempt. False when the attempt is no longer wanted (then nothing is sent).
    /// `renewCredentialsAt`: when the connection's self-signed token should be renewed.
    mutating func expectConnack(_ id: Int, renewCredentialsAt: Date?) -> Bool {
        guard attempt?.id == id, attempt?.isWanted == true else { return false }
        attempt?.connack = .awaited
        attempt?.renewCredentialsAt = renewCredentialsAt
        return true
    }

    /// A CONNACK arrived (on the network thread).
    mutating func connackReceived(returnCode: Int32) {
        guard case .awaited? = attempt?.connack else { return }
        attempt?.connack = .answered(returnCode == 0 ? .accepted : .refused(returnCode: returnCode))
    }

    /// The CONNACK wait's outcome, once there is one (the attempt takes it).
    mutating func takeConnackOutcome(_ id: Int) -> ConnackOutcome? {
        guard attempt?.id == id, case .answered(let outcome)? = attempt?.connack else { return nil }
        attempt?.connack = .settled(outcome)
        return outcome
    }

    /// The wait is over (timed out, or the waiting task was cancelled): an answer that came
    /// meanwhile still counts; otherwise the attempt timed out.
    mutating func connackTimedOut(_ id: Int) -> ConnackOutcome {
        if let outcome = takeConnackOutcome(id) { return outcome }
        if attempt?.id == id { attempt?.connack = .settled(.timedOut) }
        return .timedOut
    }

    /// The connection could not be made; no CONNACK can come.
    mutating func connectFailed(_ id: Int, error: IoTHubError) -> ConnackOutcome {
        if attempt?.id == id { attempt?.connack = .settled(.connectFailed(error)) }
        return .connectFailed(error)
    }

    enum ConnectionCleanup {
        /// The hub accepted a wanted connection: let publishes through.
        case openForPublishing(Connection)
        /// Send DISCONNECT (if connected) and stop the network thread.
        case close(Connection)
        /// The connection has ended: join its network thread.
        case stopNetworkThread(Connection)
    }

    /// What becomes of the attempt's connection after its CONNACK wait, and the attempt's
    /// result. `endpoint` and `timeout` word the errors.
    func settle(
        _ id: Int, outcome: ConnackOutcome, connection: Connection, endpoint: String, timeout: Duration
    ) -> (cleanup: ConnectionCleanup, result: Result<Void, IoTHubError>) {
        let wanted = attempt?.id == id && attempt?.isWanted == true && phase != .shutDown
        switch outcome {
        case .accepted where wanted:
            return (.openForPublishing(connection), .success(()))
        case .accepted:
            // A disconnect() or shutdown() that ran while the attempt was under way wins: the
            // new connection is closed rather than left behind.
            return (.close(connection), .failure(Self.overtakenError))
        case .refused(let code) where code == 4 || code == 5:
            return (
                .close(connection),
                .failure(.credentialError("the hub refused the credentials of \(clientId) (CONNACK \(code))"))
            )
        case .refused(let code):
            return (
                .close(connection), .failure(.connectionFailedError("the hub refused the connection (CONNACK \(code))"))
            )
        case .connectionClosed(let reason):
            let error = IoTHubError.connectionFailedError(
                reason.map { "cannot connect to \(endpoint): \($0)" }
                    ?? "the connection to \(endpoint) closed before the hub answered CONNECT")
            return (.stopNetworkThread(connection), .failure(wanted ? error : Self.overtakenError))
        case .timedOut:
            return (.close(connection), .failure(.operationTimeout("no CONNACK from \(endpoint) within \(timeout)")))
        case .connectFailed(let error):
            return (.stopNetworkThread(connection), .failure(error))
        }
    }

    enum AttemptFinishedAction {
        /// Nothing to do (not the current attempt).
        case none
        /// Connected: announce `change`, resubscribe and refresh (after every connect), answer
        /// the waiters. `thenLost`: the connection ended before the attempt completed, so it is
        /// handled as lost right away.
        case connected(change: ConnectionStateChange?, waiters: [Waiter], thenLost: ConnectionLostAction)
        /// A connect failed: announce `change` (disconnected), answer the waiters.
        case failed(IoTHubError, change: ConnectionStateChange?, waiters: [Waiter])
        /// A reconnect or renewal failed: report the error; the timers start the next attempt
        /// after the retry interval.
        case retryLater(IoTHubError, waiters: [Waiter])
        /// A reconnect or renewal failed for good (refused credentials; a renewal without
        /// connection retry): report the error, announce `change` (disconnected), fail the
        /// operations still waiting when `failPending` (a reconnect loop that ends), answer the
        /// waiters.
        case gaveUp(
            IoTHubError, change: ConnectionStateChange?, failPending: Bool, connection: Connection?, waiters: [Waiter])
        /// `disconnect()` or `shutdown()` overtook the attempt: answer its waiters with `error`
        /// (report it too when `report`: the attempt was the client's own); start `next`, a
        /// connect queued meanwhile.
        case overtaken(IoTHubError, report: Bool, waiters: [Waiter], next: AttemptStart?)
    }

    /// The attempt ended with `result`.
    mutating func finishAttempt(_ id: Int, result: Result<Void, IoTHubError>, at now: Moment) -> AttemptFinishedAction {
        guard let finished = attempt, finished.id == id else { return .none }
        attempt = nil
        guard finished.isWanted, phase != .shutDown else {
            let error: IoTHubError =
                switch result {
                case .success: Self.overtakenError
                case .failure(let error): error
                }
            var next: AttemptStart?
            if let queued = queuedAttempt {
                queuedAttempt = nil
                attempt = queued
                next = AttemptStart(id: queued.id, purpose: queued.purpose, previousConnection: connection)
            }
            return .overtaken(error, report: finished.purpose != .connect, waiters: finished.waiters, next: next)
        }
        switch result {
        case .success:
            let change = enter(.connected, reason: nil, at: now)
            connectionId = id
            reconnectDeadline = nil
            renewalDeadline = finished.renewCredentialsAt.map {
                now.instant + .seconds(max(0, $0.timeIntervalSince(now.date)))
            }
            let lost = finished.lostAfterAcceptance ? connectionLost(at: now) : .none
            return .connected(change: change, waiters: finished.waiters, thenLost: lost)
        case .failure(let error):
            switch finished.purpose {
            case .connect:
                return .failed(error, change: enter(.disconnected, reason: error, at: now), waiters: finished.waiters)
            case .reconnect:
                if case .credentialError = error {
                    return .gaveUp(
                        error, change: enter(.disconnected, reason: error, at: now), failPending: true,
                        connection: connection,
                        waiters: finished.waiters)
                }
                reconnectDeadline = now.instant + retryInterval
                return .retryLater(error, waiters: finished.waiters)
            case .renewal:
                if case .credentialError = error {
                    return .gaveUp(
                        error, change: enter(.disconnected, reason: error, at: now), failPending: false,
                        connection: connection,
                        waiters: finished.waiters)
                }
                guard retriesConnection else {
                    return .gaveUp(
                        error, change: enter(.disconnected, reason: error, at: now), failPending: false,
                        connection: connection,
                        waiters: finished.waiters)
                }
                _ = enter(.reconnecting, reason: nil, at: now)
                reconnectDeadline = now.instant + retryInterval
                return .retryLater(error, waiters: finished.waiters)
            }
        }
    }

    // MARK: The connection ends

    enum ConnectionLostAction {
        case none
        /// Report `error`, announce `change` (reconnecting) and reconnect: `attempt` at once, or
        /// (nil) after the retry interval, which the timers keep. `shortLived`: the hub ended
        /// the connection right after accepting it.
        case reconnect(IoTHubError, change: ConnectionStateChange?, attempt: AttemptStart?, shortLived: Bool)
        /// Connection retry is off: report `error`, announce `change` (disconnected), fail the
        /// operations still waiting.
        case giveUp(IoTHubError, change: ConnectionStateChange?, connection: Connection?, shortLived: Bool)
    }

    /// The connection ended (on the network thread); `requested` when the client closed it.
    /// It answers an attempt waiting for its CONNACK; otherwise, unrequested, it is a lost
    /// connection if the client was connected. While renewing credentials it changes nothing:
    /// the renewal is making a new connection anyway.
    mutating func connectionEnded(requested: Bool, reason: String?, at now: Moment) -> ConnectionLostAction {
        if case .awaited? = attempt?.connack {
            attempt?.connack = .answered(.connectionClosed(reason: reason))
            return .none
        }
        guard !requested else { return .none }
        // Accepted, whether or not the attempt has taken the CONNACK yet (it may have come in the
        // same read as the end of the connection): the attempt finishes as connected, then lost.
        switch attempt?.connack {
        case .settled(.accepted)?, .answered(.accepted)?:
            attempt?.lostAfterAcceptance = true
            return .none
        default:
            break
        }
        guard phase == .connected else { return .none }
        return connectionLost(at: now)
    }

    private mutating func connectionLost(at now: Moment) -> ConnectionLostAction {
        let connectedFor = now.date.timeIntervalSince(since)
        renewalDeadline = nil
        connectionId = nil
        // A connection the hub ends right after accepting it is usually taken over by another
        // client with the same identity (IoT Hub closes the older one). Reconnecting at once
        // would take it back, and both would trade the connection as fast as they can: wait the
        // retry interval instead, and say why.
        let shortLived = connectedFor < Self.shortLivedConnection
        let error: IoTHubError =
            shortLived
            ? .connectionDroppedError(
                "the hub closed the connection \(Int(connectedFor * 1000)) ms after accepting it; is another client connected as \(clientId)?"
            )
            : .connectionDroppedError("the connection to the hub was lost")
        guard retriesConnection else {
            return .giveUp(
                error, change: enter(.disconnected, reason: error, at: now), connection: connection,
                shortLived: shortLived)
        }
        let change = enter(.reconnecting, reason: error, at: now)
        if shortLived {
            reconnectDeadline = now.instant + retryInterval
            return .reconnect(error, change: change, attempt: nil, shortLived: true)
        }
        return .reconnect(error, change: change, attempt: startAttempt(.reconnect, waiters: []), shortLived: false)
    }

    // MARK: Credentials

    enum RenewalAction {
        /// Not connected, or an attempt is under way: nothing to renew; answer the waiter.
        case notConnected(Waiter?)
        /// Announce `change` and run the renewal (the waiter waits for it).
        case startAttempt(AttemptStart, change: ConnectionStateChange?)
    }

    /// Renew the connection's credentials (a SAS token about to expire, `update_sastoken`): close
    /// the connection and make it again. The renewal is the attempt in progress, so a concurrent
    /// `connect()` joins it instead of starting a second attempt on the same connection.
    mutating func renewCredentials(waiter: Waiter?, at now: Moment) -> RenewalAction {
        guard phase == .connected, attempt == nil, connection != nil else { return .notConnected(waiter) }
        renewalDeadline = nil
        connectionId = nil
        let change = enter(.renewingCredentials, reason: nil, at: now)
        return .startAttempt(startAttempt(.renewal, waiters: waiter.map { [$0] } ?? []), change: change)
    }

    /// The application supplied a SAS token expiring at `expiry`: ask for the next one 120 s
    /// before then.
    mutating func newTokenSupplied(expiringAt expiry: Date, at now: Moment) {
        newTokenRequestDeadline = now.instant + .seconds(max(0, expiry.timeIntervalSince(now.date) - 120))
    }

    // MARK: Timers

    enum TimerAction {
        /// Start this attempt (a reconnect, or a renewal), announcing `change` first.
        case startAttempt(AttemptStart, change: ConnectionStateChange?)
        /// Ask the application for a new SAS token.
        case requestNewToken
    }

    /// The timers that are due at `now`, and when the next one is.
    mutating func timersDue(at now: Moment) -> (actions: [TimerAction], next: ContinuousClock.Instant?) {
        var actions: [TimerAction] = []
        if let deadline = reconnectDeadline, deadline <= now.instant {
            reconnectDeadline = nil
            if phase == .reconnecting, attempt == nil {
                actions.append(.startAttempt(startAttempt(.reconnect, waiters: []), change: nil))
            }
        }
        if let deadline = renewalDeadline, deadline <= now.instant {
            renewalDeadline = nil
            if case .startAttempt(let start, let change) = renewCredentials(waiter: nil, at: now) {
                actions.append(.startAttempt(start, change: change))
            }
        }
        if let deadline = newTokenRequestDeadline, deadline <= now.instant {
            newTokenRequestDeadline = nil
            actions.append(.requestNewToken)
        }
        let next = [reconnectDeadline, renewalDeadline, newTokenRequestDeadline].compactMap { $0 }.min()
        return (actions, next)
    }

    // MARK: disconnect() and shutdown()

    enum DisconnectAction {
        /// Already shut down: nothing to close.
        case none
        /// Close `connection` (if any), fail what is pending, answer `cancelledWaiters` (of a
        /// queued connect) with ``overtakenError``; then ``disconnected(at:)``.
        case close(Connection?, cancelledWaiters: [Waiter])
    }

    /// `disconnect()` begins: the scheduled reconnect and renewal are off, the connection is
    /// taken to be closed, and an attempt under way is no longer wanted (one waiting for its
    /// CONNACK stops waiting now, not at its timeout).
    mutating func disconnect() -> DisconnectAction {
        guard phase != .shutDown else { return .none }
        reconnectDeadline = nil
        renewalDeadline = nil
        connectionId = nil
        let closing = connection
        connection = nil
        attempt?.isWanted = false
        if case .awaited? = attempt?.connack {
            attempt?.connack = .answered(.connectionClosed(reason: nil))
        }
        let cancelled = queuedAttempt?.waiters ?? []
        queuedAttempt = nil
        return .close(closing, cancelledWaiters: cancelled)
    }

    /// `disconnect()` has closed the connection: the change to announce, if any.
    mutating func disconnected(at now: Moment) -> ConnectionStateChange? {
        enter(.disconnected, reason: nil, at: now)
    }

    /// `shutdown()`, after `disconnect()`: for good.
    mutating func shutDown(at now: Moment) {
        newTokenRequestDeadline = nil
        _ = enter(.shutDown, reason: nil, at: now)
    }

    // MARK: Phase changes

    /// Moves to `next`. A change applications see as one moves `since` on, records `reason`
    /// as the last error, and is returned for announcing (except the shutdown, which is not
    /// announced). Nothing leaves `shutDown`.
    private mutating func enter(_ next: Phase, reason: IoTHubError?, at now: Moment) -> ConnectionStateChange? {
        guard phase != .shutDown else { return nil }
        guard !phase.isSameStep(as: next) else {
            phase = next
            return nil
        }
        phase = next
        since = now.date
        if let reason { lastError = reason }
        return next == .shutDown ? nil : ConnectionStateChange(state: next.reported, since: since, reason: reason)
    }
}
