import AsyncPrimitives
import Foundation
public import IoTHubDevice
import IoTHubProtocol
public import Logging
import NIOConcurrencyHelpers
public import ServiceLifecycle

/// The single door between the HTTP layer and the device: the device client and everything the
/// REST API keeps for it — the inbox of cloud-to-device messages, the queue of method requests,
/// the desired-properties cursor, the event feed and the metrics. The HTTP layer maps requests
/// to the bridge's operations (`DeviceBridge+Operations.swift`) and their results to
/// responses; it never reaches the client or these stores itself.
///
/// As a `Service` the bridge listens to the client from the start (so nothing that arrives
/// before the first poll is lost), connects, and on graceful shutdown disconnects cleanly.
public final class DeviceBridge: Service, Sendable {
    let client: IoTHubDeviceClient
    let inbox: Inbox
    let methods = MethodRequestQueue()
    let desired = DesiredPropertiesCursor()
    let events = Broadcaster<SidecarEvent>(bufferingPolicy: .bufferingNewest(1024))
    /// The sidecar's metrics; the HTTP layer counts its requests here too.
    let metrics = SidecarMetrics()
    let logger: Logger
    /// Given when the sidecar begins to shut down.
    let draining = OneWaySignal()
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

    /// Whether a user-supplied SAS token expires within 120 s and no new one was given.
    var isNewSASTokenRequired: Bool { newTokenRequired.withLockedValue { $0 } }

    /// Sets or clears "a new SAS token is required".
    func setNewSASTokenRequired(_ required: Bool) {
        newTokenRequired.withLockedValue { $0 = required }
    }

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
        setNewSASTokenRequired(true)
        let expiry = connection.tokenExpiry ?? Date()
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

    var isDraining: Bool { draining.isSignalled }
}
