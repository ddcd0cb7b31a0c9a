import AsyncPrimitives
import Foundation
public import IoTHubDevice
import IoTHubProtocol
public import Logging
import NIOConcurrencyHelpers
public import ServiceLifecycle

/// The device client and everything the REST API keeps for it: the inbox of cloud-to-device
/// messages, the queue of method requests, the desired-properties cursor, the event feed and
/// the metrics. As a `Service` it listens to the client from the start (so nothing that
/// arrives before the first poll is lost), connects, and on graceful shutdown disconnects
/// cleanly.
public final class DeviceBridge: Service, Sendable {
    /// The device client; the REST handlers call it.
    public let client: IoTHubDeviceClient
    let inbox: Inbox
    let methods = MethodRequestQueue()
    let desired = DesiredPropertiesCursor()
    let events = Broadcaster<SidecarEvent>(bufferingPolicy: .bufferingNewest(1024))
    let metrics = SidecarMetrics()
    let logger: Logger
    /// Given when the sidecar begins to shut down.
    private let draining = OneWaySignal()
    private let newTokenRequired = NIOLockedValueBox(false)
    /// The state of the last connection state change seen, to tell reconnections.
    private let lastConnectionState = NIOLockedValueBox<ConnectionState?>(nil)

    /// - Parameters:
    ///   - client: a client created but not yet connected.
    ///   - inboxCapacity: messages the inbox holds before it drops the oldest unlocked one.
    public init(client: IoTHubDeviceClient, inboxCapacity: Int = 10_000, logger: Logger) {
        self.client = client
        self.inbox = Inbox(capacity: inboxCapacity)
        self.logger = logger
    }

    /// Whether the identity is a module (outputs, module inputs; no file upload).
    var isModule: Bool { client.moduleId != nil }

    /// Seconds for `Retry-After` on connection errors: the client's retry interval.
    var retryAfterSeconds: Int { max(1, Int(client.configuration.connectionRetryInterval.components.seconds)) }

    /// Whether a user-supplied SAS token expires within 120 s and no new one was given.
    var isNewSASTokenRequired: Bool { newTokenRequired.withLockedValue { $0 } }

    // MARK: Service

    public func run() async throws {
        // Listen before connecting: the client subscribes for each listener.
        let messages = client.messages()
        let methodRequests = client.methodRequests()
        let patches = client.desiredPropertiesPatches()
        let states = client.connectionStateChanges()
        let errors = client.backgroundErrors()
        let tokens = client.newSASTokenRequired()
        await withDiscardingTaskGroup { group in
            group.addTask { for await message in messages { self.received(message) } }
            group.addTask { for await request in methodRequests { self.received(request) } }
            group.addTask { for await patch in patches { self.received(desiredPatch: patch) } }
            group.addTask { for await change in states { self.changed(change) } }
            group.addTask { for await error in errors { self.failedInBackground(error) } }
            group.addTask { for await _ in tokens { self.tokenExpiresSoon() } }
            group.addTask { await self.connectAtStart() }
            try? await gracefulShutdown()
            self.beginDraining()
            logger.info("disconnecting from the hub")
            await client.shutdown()
            events.finish()
            group.cancelAll()
        }
    }

    /// Ends long-polls and event streams at once (they answer 204 or end): the first step of
    /// a graceful shutdown, before the HTTP server waits for its requests.
    public func beginDraining() {
        draining.signal()
        events.finish()
    }

    /// Connects when the sidecar starts; with connection retry on, keeps trying until it
    /// works, the credentials are refused, or the sidecar stops.
    private func connectAtStart() async {
        while !draining.isSignalled {
            do throws(IoTHubError) {
                try await client.connect()
                logger.info("connected to the hub", metadata: ["host": "\(client.configuration.gatewayHostName ?? client.hostName)"])
                return
            } catch {
                logger.error("could not connect to the hub", metadata: ["error": "\(error)"])
                events.yield(.error(error))
                metrics.increment(.backgroundErrors, labels: [("code", error.code)])
                if case .credentialError = error { return }
                guard client.configuration.connectionRetry else { return }
            }
            _ = await draining.wait(timeout: client.configuration.connectionRetryInterval)
        }
    }

    // MARK: What the client reports

    private func received(_ message: Message) {
        let droppedBefore = inbox.depth.dropped
        inbox.deliver(message)
        if inbox.depth.dropped > droppedBefore {
            logger.warning("the inbox is full: its oldest waiting message was dropped; poll GET /inbox", metadata: ["capacity": "\(inbox.capacity)"])
        }
        metrics.increment(.messagesReceived)
        events.yield(.message(message, queued: inbox.depth.waiting))
        logger.debug("cloud-to-device message received", metadata: ["messageId": "\(message.messageId ?? "")"])
    }

    private func received(_ request: MethodRequest) {
        methods.deliver(request)
        metrics.increment(.methodRequests)
        events.yield(.method(request))
        logger.debug("method request received", metadata: ["method": "\(request.name)", "requestId": "\(request.requestId)"])
    }

    private func received(desiredPatch patch: JSONValue) {
        guard let version = patch["$version"]?.intValue else { return }
        desired.apply(patch: patch)
        metrics.increment(.desiredPatches)
        events.yield(.desired(patch: patch, version: version))
    }

    private func changed(_ change: ConnectionStateChange) {
        metrics.increment(.stateChanges, labels: [("state", change.state.rawValue)])
        metrics.set(.connected, to: change.state == .connected ? 1 : 0)
        // The client reports `reconnecting` again for every attempt: a reconnection is the
        // step from `reconnecting` to `connected`.
        let previous = lastConnectionState.withLockedValue { last in
            defer { last = change.state }
            return last
        }
        if change.state == .connected, previous == .reconnecting { metrics.increment(.reconnects) }
        events.yield(.connection(change))
        var metadata: Logger.Metadata = ["state": "\(change.state.rawValue)"]
        if let reason = change.reason { metadata["reason"] = "\(reason)" }
        logger.info("connection state changed", metadata: metadata)
        if change.state == .connected {
            // A change made while disconnected is seen too: read the whole twin again.
            Task { await self.refreshDesired() }
        }
    }

    private func failedInBackground(_ error: IoTHubError) {
        metrics.increment(.backgroundErrors, labels: [("code", error.code)])
        events.yield(.error(error))
        logger.warning("background error", metadata: ["error": "\(error)"])
    }

    private func tokenExpiresSoon() {
        newTokenRequired.withLockedValue { $0 = true }
        let expiry = client.status.tokenExpiry ?? Date()
        events.yield(.sasToken(expiry: expiry))
        logger.warning("the SAS token expires soon; give a new one with PUT /sastoken", metadata: ["expiry": "\(Timestamp.string(expiry))"])
    }

    /// Reads the twin and sets the desired cursor from it.
    @discardableResult
    func refreshDesired() async -> Bool {
        do throws(IoTHubError) {
            desired.replace(desired: try await client.twin().desired)
            return true
        } catch {
            failedInBackground(error)
            return false
        }
    }

    // MARK: Operations for the handlers

    /// Sends one message and counts the outcome.
    func send(_ message: Message) async throws(IoTHubError) {
        do throws(IoTHubError) {
            try await client.send(message)
            metrics.increment(.messagesSent)
        } catch {
            metrics.increment(.sendFailures, labels: [("code", error.code)])
            throw error
        }
    }

    /// Sends messages in order, pipelined, and counts each outcome.
    func send(_ messages: [Message]) async -> [Result<Void, IoTHubError>] {
        let results = await client.send(messages)
        for result in results {
            switch result {
            case .success: metrics.increment(.messagesSent)
            case .failure(let error): metrics.increment(.sendFailures, labels: [("code", error.code)])
            }
        }
        return results
    }

    /// Replaces the SAS token and clears the "new token required" flag.
    func updateSASToken(_ text: String) async throws(IoTHubError) {
        try await client.updateSASToken(text)
        newTokenRequired.withLockedValue { $0 = false }
    }

    /// Before a long-poll waits: a disconnected client connects first with auto-connect, or
    /// the poll fails at once without it.
    func prepareToWait() async throws(IoTHubError) {
        guard client.status.state == .disconnected else { return }
        guard client.configuration.autoConnect else {
            throw .noConnectionError("the client is not connected and auto_connect is off; POST /connect first")
        }
        try await client.connect()
    }

    /// Runs a wait that ends early (with nil) when the sidecar begins to shut down. The
    /// operation's own result is always returned, so nothing it took is lost.
    func untilDraining<T: Sendable>(_ operation: @escaping @Sendable () async -> T?) async -> T? {
        await withTaskGroup(of: Outcome<T>.self) { group in
            group.addTask { .finished(await operation()) }
            group.addTask {
                await self.draining.wait()
                return .draining
            }
            while let outcome = await group.next() {
                switch outcome {
                case .finished(let value):
                    group.cancelAll()
                    return value
                case .draining:
                    // Cancels the operation; its result (if it took something) still comes.
                    group.cancelAll()
                }
            }
            return nil
        }
    }

    private enum Outcome<T: Sendable>: Sendable {
        case finished(T?)
        case draining
    }

    var isDraining: Bool { draining.isSignalled }
}
