import AsyncPrimitives
internal import CMosquitto
import Dispatch
import FoundationEssentials
import Glibc
import IoTHubProtocol
import NIOConcurrencyHelpers

/// What libmosquitto reports from its network thread.
enum MQTTEvent: Sendable {
    /// CONNACK with its return code (0 accepted).
    case connected(returnCode: Int32)
    /// The connection ended; `requested` when we asked for it; `reason` when it is known
    /// (a failed TLS handshake).
    case disconnected(requested: Bool, reason: String? = nil)
    /// A message from the hub.
    case message(topic: String, payload: Data)
}

/// One libmosquitto client handle with its network thread.
///
/// A `MosquittoNetworkThread` drives the connection: publishes from any thread are queued and
/// written by that thread, callbacks run on it. The C callbacks
/// find this object through the `obj` pointer (unretained: the handle is destroyed in `deinit`,
/// after its thread has stopped, so no callback can outlive the object). Callbacks only
/// complete entries of the lock-protected pending tables or hand the event to `onEvent`.
/// Blocking libmosquitto calls (connect, reconnect, joining the thread) run on a private serial
/// queue, never on Swift's cooperative pool.
///
/// `Sendable` as the compiler checks it: the libmosquitto handle is a ``MosquittoHandle`` (whose
/// comment says why each use is safe), the Swift state is behind locks.
final class MosquittoClient: Sendable {
    private struct State {
        var disconnectRequested = false
        /// Whether the end of the current connection has been reported (by libmosquitto's
        /// disconnect callback or by the network thread).
        var connectionEndReported = false
    }

    /// Whether publishes may be handed to libmosquitto: from an accepted CONNACK until the next
    /// (re)connect begins. Two reasons: libmosquitto keeps a QoS 1 message it could not write
    /// (no socket) and sends it again after a reconnect, but only if the message was queued
    /// before that reconnect started (one queued while `mosquitto_reconnect` runs waits for a
    /// PUBACK forever); and while its network thread is stopped, libmosquitto writes a publish
    /// from the publishing thread, on the TLS session the reconnect is setting up. Publishes
    /// take this lock around their libmosquitto call and a (re)connect closes the gate under it
    /// first, so no publish overlaps a reconnect. The lock is never taken in a libmosquitto
    /// callback (no lock-order cycle with libmosquitto's own mutexes).
    private let publishGate = NIOLockedValueBox(false)

    private let mosquitto: MosquittoHandle
    private var handle: OpaquePointer { mosquitto.pointer }
    /// Signalled by the network thread each time it sees the connection end.
    private let connectionEnded = DispatchSemaphore(value: 0)
    /// How long a DISCONNECT may take to close the connection before the socket is shut down.
    private static let disconnectGrace: DispatchTimeInterval = .seconds(2)
    private let state = NIOLockedValueBox(State())
    /// Publishes waiting for their PUBACK and subscriptions for their SUBACK, by packet id. A
    /// packet id is known only once libmosquitto has taken the packet, and the network thread
    /// may read the acknowledgement before the caller registers: early ones are kept.
    private let publishAcknowledgements = PendingReplies<Int32, Void, IoTHubError>(keepingEarlyReplies: true)
    private let subscribeAcknowledgements = PendingReplies<Int32, [Int32], IoTHubError>(keepingEarlyReplies: true)
    private let unsubscribeAcknowledgements = PendingReplies<Int32, Void, IoTHubError>(keepingEarlyReplies: true)
    /// The thread of the current connection; nil before the first connect and once stopped.
    private let networkThread = NIOLockedValueBox<MosquittoNetworkThread?>(nil)
    private let controlQueue = DispatchQueue(label: "iothub-sidecar.mqtt-control")
    private let onEvent: @Sendable (MQTTEvent) -> Void
    private let beforeWrite: @Sendable () -> Bool
    private let acknowledgementTimeout: Duration
    /// Fails publishes whose PUBACK is overdue; cancelled in `deinit`.
    private let overdueSweep: Task<Void, Never>
    /// The TLS context libmosquitto uses (nil: plain MQTT, to the tunnel); kept alive as long as
    /// libmosquitto may use it.
    private let tlsContext: TLSContext?

    static let libraryInitialized: Bool = {
        mosquitto_lib_init()
        return true
    }()

    /// - Parameter acknowledgementTimeout: how long a publish waits for its PUBACK before it
    ///   fails with `OperationTimeout` (the message stays with libmosquitto and may still arrive).
    /// - Parameter beforeWrite: runs on the network thread before each write (see
    ///   ``MosquittoNetworkThread``): keeps what was received before it is acknowledged.
    init(
        clientId: String, tls: TLSContext?, maximumInflight: Int, acknowledgementTimeout: Duration,
        beforeWrite: @escaping @Sendable () -> Bool = { true }, onEvent: @escaping @Sendable (MQTTEvent) -> Void
    ) throws(IoTHubError) {
        _ = Self.libraryInitialized
        self.onEvent = onEvent
        self.beforeWrite = beforeWrite
        self.tlsContext = tls
        self.acknowledgementTimeout = acknowledgementTimeout
        guard let handle = mosquitto_new(clientId, false, nil) else {
            throw .clientError("libmosquitto could not create a client")
        }
        self.mosquitto = MosquittoHandle(pointer: handle)
        self.overdueSweep = Self.startOverdueSweep(of: publishAcknowledgements, timeout: acknowledgementTimeout)
        mosquitto_user_data_set(handle, Unmanaged.passUnretained(self).toOpaque())
        mosquitto_int_option(handle, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311)
        mosquitto_int_option(handle, MOSQ_OPT_TCP_NODELAY, 1)
        // The client runs the network thread itself: publishing threads only queue packets.
        mosquitto_threaded_set(handle, true)
        mosquitto_max_inflight_messages_set(handle, UInt32(max(1, min(maximumInflight, 65535))))
        mosquitto_connect_callback_set(handle) { _, object, returnCode in
            MosquittoClient.from(object)?.onEvent(.connected(returnCode: returnCode))
        }
        mosquitto_disconnect_callback_set(handle) { handle, object, _ in
            guard let client = MosquittoClient.from(object) else { return }
            let requested = client.state.withLockedValue { state in
                state.connectionEndReported = true
                return state.disconnectRequested
            }
            if !requested, let handle {
                // Marks the session as ended: the client decides when and with which credentials
                // to reconnect.
                mosquitto_disconnect(handle)
            }
            client.connectionEnded.signal()
            client.onEvent(.disconnected(requested: requested))
        }
        mosquitto_publish_callback_set(handle) { _, object, mid in
            MosquittoClient.from(object)?.publishAcknowledged(mid: mid)
        }
        mosquitto_subscribe_callback_set(handle) { _, object, mid, count, granted in
            let codes = (0..<Int(count)).map { granted?[$0] ?? 0x80 }
            MosquittoClient.from(object)?.subscribeAcknowledged(mid: mid, granted: codes)
        }
        mosquitto_unsubscribe_callback_set(handle) { _, object, mid in
            MosquittoClient.from(object)?.unsubscribeAcknowledgements.complete(mid, with: .success(()))
        }
        mosquitto_message_callback_set(handle) { _, object, message in
            guard let client = MosquittoClient.from(object), let message = message?.pointee, let topic = message.topic
            else { return }
            let payload = message.payload.map { Data(bytes: $0, count: Int(message.payloadlen)) } ?? Data()
            client.onEvent(.message(topic: String(cString: topic), payload: payload))
        }
        if let tls {
            // libmosquitto applies none of its own defaults to a context it is given.
            mosquitto_int_option(handle, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0)
            mosquitto_void_option(handle, MOSQ_OPT_SSL_CTX, UnsafeMutableRawPointer(tls.pointer))
        }
    }

    deinit {
        overdueSweep.cancel()
        networkThread.withLockedValue { $0 }?.stop()
        mosquitto_destroy(handle)
    }

    private static func from(_ object: UnsafeMutableRawPointer?) -> MosquittoClient? {
        object.map { Unmanaged<MosquittoClient>.fromOpaque($0).takeUnretainedValue() }
    }

    /// Opens the TCP and TLS connection and sends CONNECT (the CONNACK arrives as an event),
    /// then starts the network thread. `reconnect` keeps the session's queued messages.
    func connect(host: String, port: Int, keepAlive: Int, username: String, password: String?, reconnect: Bool)
        async throws(IoTHubError)
    {
        let result: Result<Void, IoTHubError> = await withCheckedContinuation { continuation in
            controlQueue.async { [self] in
                publishGate.withLockedValue { $0 = false }
                stopLoopOnControlQueue()
                state.withLockedValue { state in
                    state.disconnectRequested = false
                    state.connectionEndReported = false
                }
                mosquitto_username_pw_set(handle, username, password)
                tlsContext?.clearRejection()
                let code =
                    reconnect
                    ? mosquitto_reconnect(handle) : mosquitto_connect(handle, host, Int32(port), Int32(keepAlive))
                guard code == MOSQ_ERR_SUCCESS.rawValue else {
                    // The handshake may end within the connect call (a quick server).
                    let reason =
                        code == MOSQ_ERR_TLS.rawValue
                        ? tlsContext?.describeHandshakeFailure() ?? Self.describe(code) : Self.describe(code)
                    continuation.resume(
                        returning: .failure(
                            .connectionFailedError("cannot connect to \(hostAndPort(host, port)): \(reason)")))
                    return
                }
                do throws(IoTHubError) {
                    let thread = try MosquittoNetworkThread(handle: mosquitto, beforeWrite: beforeWrite) {
                        [weak self] failure in
                        self?.networkThreadEnded(failure: failure)
                    }
                    networkThread.withLockedValue { $0 = thread }
                    // CONNECT is queued; the thread writes it.
                    thread.wake()
                    continuation.resume(returning: .success(()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        try result.get()
    }

    /// The network thread ended with the connection. libmosquitto has called the disconnect
    /// callback for most endings; a failed TLS handshake it only closes, and without this the
    /// client would wait the whole operation timeout for a CONNACK that cannot come.
    private func networkThreadEnded(failure: Int32) {
        let requested = state.withLockedValue { state -> Bool? in
            guard !state.connectionEndReported else { return nil }
            state.connectionEndReported = true
            return state.disconnectRequested
        }
        guard let requested else { return }
        let reason: String? =
            switch failure {
            case MOSQ_ERR_SUCCESS.rawValue: nil
            case MOSQ_ERR_TLS.rawValue: tlsContext?.describeHandshakeFailure() ?? "the TLS handshake failed"
            default: Self.describe(failure)
            }
        connectionEnded.signal()
        onEvent(.disconnected(requested: requested, reason: reason))
    }

    /// Makes the network thread write what was just queued.
    private func wakeNetworkThread() {
        networkThread.withLockedValue { $0 }?.wake()
    }

    /// Lets publishes through once the hub has accepted the connection (CONNACK 0).
    func openForPublishing() {
        publishGate.withLockedValue { $0 = true }
    }

    /// Checks a few times per acknowledgement timeout (at most every second) for publishes
    /// whose PUBACK is overdue and fails them.
    private static func startOverdueSweep(
        of acknowledgements: PendingReplies<Int32, Void, IoTHubError>, timeout: Duration
    ) -> Task<Void, Never> {
        let interval = min(max(timeout / 4, .milliseconds(10)), .seconds(1))
        return Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                acknowledgements.failOverdue(
                    now: .now,
                    with: .operationTimeout(
                        "the hub did not acknowledge the message within \(timeout); it is still queued and may yet arrive"
                    ))
            }
        }
    }

    /// Sends DISCONNECT (if connected) and stops the network thread.
    func disconnect() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            controlQueue.async { [self] in
                disconnectOnControlQueue()
                continuation.resume()
            }
        }
    }

    /// ``disconnect()`` without waiting for it, for a client that is going away: the queued
    /// work holds this object until it is done. Safe to call on the network thread.
    func disconnectWithoutWaiting() {
        controlQueue.async { [self] in disconnectOnControlQueue() }
    }

    private func disconnectOnControlQueue() {
        publishGate.withLockedValue { $0 = false }
        state.withLockedValue { $0.disconnectRequested = true }
        while connectionEnded.wait(timeout: .now()) == .success {}
        mosquitto_disconnect(handle)
        wakeNetworkThread()
        if networkThread.withLockedValue({ $0 }) != nil,
            connectionEnded.wait(timeout: .now() + Self.disconnectGrace) == .timedOut
        {
            // The peer neither answered nor closed (a CONNECT still unanswered, a hub that
            // hangs): end the connection here, so the network thread stops.
            let socket = mosquitto_socket(handle)
            if socket >= 0 { _ = Glibc.shutdown(socket, Int32(SHUT_RDWR)) }
        }
        stopLoopOnControlQueue()
    }

    /// Stops the network thread (after a drop it has ended on its own; this joins it).
    func stopLoop() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            controlQueue.async { [self] in
                stopLoopOnControlQueue()
                continuation.resume()
            }
        }
    }

    private func stopLoopOnControlQueue() {
        let thread = networkThread.withLockedValue { thread in
            defer { thread = nil }
            return thread
        }
        thread?.stop()
    }

    /// Publishes at QoS 1 and returns when the PUBACK arrives. A message handed over while the
    /// connection is down is kept by libmosquitto and sent after the next reconnect; while a
    /// connection is being (re)made nothing is handed over and this throws `NoConnectionError`
    /// (the message was not taken; the caller may send it again). Without a PUBACK within the
    /// acknowledgement timeout it throws `OperationTimeout`.
    func publish(topic: String, payload: Data) async throws(IoTHubError) {
        let deadline = ContinuousClock.now + acknowledgementTimeout
        let mid = try handOver(topic: topic, payload: payload)
        try await publishAcknowledgements.reply(to: mid, deadline: deadline) {
            .operationCancelled("the caller stopped waiting for the hub's acknowledgement")
        }
    }

    /// Publishes every message in order at QoS 1, one libmosquitto call after the other on this
    /// thread (no task or hop per message), and returns one result per message once each has
    /// its PUBACK or has failed. After a message that is not taken, the rest are not handed
    /// over (their order would break) and fail with the same error. `handedOver` is called once
    /// every message is with libmosquitto (or failed), before the acknowledgements are awaited:
    /// whatever is published after it goes after these messages.
    func publish(
        batch messages: [(topic: String, payload: Data)], handedOver: (@Sendable () -> Void)? = nil
    ) async -> [Result<Void, IoTHubError>] {
        let batch = PublishBatch(count: messages.count)
        let deadline = ContinuousClock.now + acknowledgementTimeout
        var published: [Int32] = []
        published.reserveCapacity(messages.count)
        for (index, message) in messages.enumerated() {
            let mid: Int32
            do throws(IoTHubError) {
                mid = try handOver(topic: message.topic, payload: message.payload)
            } catch {
                for rest in index..<messages.count { batch.complete(rest, .failure(error)) }
                break
            }
            if let early = publishAcknowledgements.register(
                mid, deadline: deadline, waiter: { batch.complete(index, $0) })
            {
                batch.complete(index, early)
            }
            published.append(mid)
        }
        let mids = published
        handedOver?()
        return await withTaskCancellationHandler {
            await batch.results()
        } onCancel: {
            // A cancelled send is "not known to be delivered", not "not delivered": the messages
            // stay with libmosquitto and may still reach the hub.
            let cancelled = IoTHubError.operationCancelled("the caller stopped waiting for the hub's acknowledgement")
            for mid in mids { self.publishAcknowledgements.abandon(mid, with: cancelled) }
        }
    }

    /// Hands one QoS 1 message to libmosquitto if publishing is open and returns its message id.
    /// `MOSQ_ERR_NO_CONN` means taken: libmosquitto queued the message (it has no socket right
    /// now) and sends it once the connection is made again.
    private func handOver(topic: String, payload: Data) throws(IoTHubError) -> Int32 {
        let handle = self.handle
        return try publishGate.withLockedValue { open -> Result<Int32, IoTHubError> in
            guard open else { return .failure(.noConnectionError("the connection to the hub is being made")) }
            var mid: Int32 = 0
            let code = payload.withUnsafeBytes { bytes in
                mosquitto_publish(handle, &mid, topic, Int32(bytes.count), bytes.baseAddress, 1, false)
            }
            guard code == MOSQ_ERR_SUCCESS.rawValue || code == MOSQ_ERR_NO_CONN.rawValue else {
                return .failure(Self.publishError(code))
            }
            // One wake-up covers every packet queued before the thread runs again.
            wakeNetworkThread()
            return .success(mid)
        }.get()
    }

    /// Subscribes and returns the granted QoS per filter (0x80 for a refusal). Cancelling the
    /// caller ends the wait.
    func subscribe(_ filters: [String]) async throws(IoTHubError) -> [Int32] {
        var mid: Int32 = 0
        let pointers = filters.map { strdup($0) }
        defer { pointers.forEach { free($0) } }
        let code = pointers.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: UnsafeMutablePointer<CChar>?.self) { rebound in
                mosquitto_subscribe_multiple(handle, &mid, Int32(filters.count), rebound.baseAddress, 1, 0, nil)
            }
        }
        guard code == MOSQ_ERR_SUCCESS.rawValue else { throw Self.publishError(code) }
        wakeNetworkThread()
        return try await subscribeAcknowledgements.reply(to: mid) {
            .operationCancelled("the caller stopped waiting for the hub's SUBACK")
        }
    }

    /// Unsubscribes and returns when the hub acknowledges it (UNSUBACK). Cancelling the caller
    /// ends the wait.
    func unsubscribe(_ filters: [String]) async throws(IoTHubError) {
        var mid: Int32 = 0
        let pointers = filters.map { strdup($0) }
        defer { pointers.forEach { free($0) } }
        let code = pointers.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: UnsafeMutablePointer<CChar>?.self) { rebound in
                mosquitto_unsubscribe_multiple(handle, &mid, Int32(filters.count), rebound.baseAddress, nil)
            }
        }
        guard code == MOSQ_ERR_SUCCESS.rawValue else { throw Self.publishError(code) }
        wakeNetworkThread()
        try await unsubscribeAcknowledgements.reply(to: mid) {
            .operationCancelled("the caller stopped waiting for the hub's UNSUBACK")
        }
    }

    /// Fails every operation still waiting (subscriptions always; publishes when `publishes`).
    /// A publish's PUBACK that still comes (after a reconnect) is dropped.
    func failPending(with error: IoTHubError, publishes: Bool) {
        if publishes { publishAcknowledgements.failAll(with: error) }
        subscribeAcknowledgements.failAll(with: error)
        unsubscribeAcknowledgements.failAll(with: error)
    }

    private func publishAcknowledged(mid: Int32) {
        publishAcknowledgements.complete(mid, with: .success(()))
    }

    private func subscribeAcknowledged(mid: Int32, granted: [Int32]) {
        subscribeAcknowledgements.complete(mid, with: .success(granted))
    }

    private static func publishError(_ code: Int32) -> IoTHubError {
        switch code {
        case MOSQ_ERR_PAYLOAD_SIZE.rawValue: .messageTooLarge(size: -1, limit: Message.maximumSize)
        case MOSQ_ERR_NO_CONN.rawValue: .noConnectionError("not connected")
        default: .clientError("libmosquitto: \(describe(code))")
        }
    }

    static func describe(_ code: Int32) -> String {
        if code == MOSQ_ERR_ERRNO.rawValue {
            return String(cString: strerror(errno))
        }
        return String(cString: mosquitto_strerror(code))
    }
}
