import AsyncPrimitives
import FoundationEssentials
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
/// before the first poll is lost), connects, runs the telemetry outbox's delivery loop, and on
/// graceful shutdown gives the outbox what time is left, then disconnects cleanly.
public final class DeviceBridge: Service, Sendable {
    let client: IoTHubDeviceClient
    /// Cloud-to-device (or module input) messages, on disk before the hub has them acknowledged.
    let inbox: CloudToDeviceInbox
    /// Where the inbox lives when the bridge was given no directory for it (removed with it).
    private let temporaryInboxDirectory: String?
    let methods = MethodRequestQueue()
    let desired = DesiredPropertiesCursor()
    let events = Broadcaster<SidecarEvent>(bufferingPolicy: .bufferingNewest(1024))
    /// The sidecar's metrics; the HTTP layer counts its requests here too.
    let metrics = SidecarMetrics()
    /// The durable telemetry outbox (store and forward), when the sidecar has a state directory.
    let outbox: TelemetryOutbox?
    /// How `POST /messages` answers without `Prefer: respond-async`.
    let defaultDelivery: TelemetryDeliveryMode
    /// How long a graceful shutdown may take in all: the outbox drains within it.
    let shutdownTimeout: Duration
    /// Whether the twin is read after every (re)connect (`ensure_desired_properties`), so that
    /// desired properties changed while disconnected reach the cursor.
    let ensureDesiredProperties: Bool
    let logger: Logger
    /// The Device Provisioning Service registration, when the identity came from DPS.
    let provisioning: (any ProvisioningController)?
    /// Given when the sidecar begins to shut down.
    let draining = OneWaySignal()
    private let newTokenRequired = NIOLockedValueBox(false)
    /// The state of the last connection state change seen, to tell reconnections.
    private let lastConnectionState = NIOLockedValueBox<ConnectionState?>(nil)
    /// The last failure reported (logged, counted, sent as an event), and when.
    private let lastFailure = NIOLockedValueBox<(text: String, at: ContinuousClock.Instant)?>(nil)
    /// The DPS registration under way after the hub refused the identity, if any.
    private let reregistration = NIOLockedValueBox<Task<Bool, Never>?>(nil)
    /// When the graceful shutdown began (``beginDraining()``).
    private let drainingSince = NIOLockedValueBox<ContinuousClock.Instant?>(nil)
    /// What the outbox went through since it last emptied (for logging once per episode).
    private let outboxEpisode = NIOLockedValueBox(OutboxEpisode())

    /// - Parameters:
    ///   - client: a client created but not yet connected.
    ///   - outbox: where accepted telemetry waits for the hub (`--state-dir`); without one,
    ///     every message is sent synchronously.
    ///   - defaultDelivery: how `POST /messages` answers without `Prefer: respond-async`.
    ///   - shutdownTimeout: how long a graceful shutdown may take (the outbox drains within it).
    ///   - ensureDesiredProperties: read the twin after every (re)connect (the Python SDK's
    ///     `ensure_desired_properties`); when off, the desired cursor moves only with the
    ///     patches the hub sends while connected (and the first read).
    ///   - inbox: where received cloud-to-device messages are kept (`--state-dir`); without one,
    ///     a private temporary directory that goes with the bridge (nothing survives a restart).
    ///   - provisioning: the DPS registration the identity came from, if it did: the bridge does
    ///     not connect without an assignment, and registers again when the hub refuses the identity.
    /// - Throws: when the outbox or the inbox cannot be opened.
    public init(
        client: IoTHubDeviceClient, outbox: OutboxConfiguration? = nil, inbox: InboxConfiguration? = nil,
        defaultDelivery: TelemetryDeliveryMode = .sync, shutdownTimeout: Duration = .seconds(10),
        ensureDesiredProperties: Bool = true,
        logger: Logger, provisioning: (any ProvisioningController)? = nil
    ) throws(OutboxError) {
        self.client = client
        self.ensureDesiredProperties = ensureDesiredProperties
        self.provisioning = provisioning
        self.outbox = try outbox.map { (configuration) throws(OutboxError) in
            try TelemetryOutbox(client: client, configuration: configuration, logger: logger)
        }
        self.defaultDelivery = outbox == nil ? .sync : defaultDelivery
        self.shutdownTimeout = shutdownTimeout
        var inboxConfiguration = inbox
        if inboxConfiguration == nil {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
                "iothub-inbox-\(UUID().uuidString)"
            ).path
            inboxConfiguration = InboxConfiguration(directory: directory)
            temporaryInboxDirectory = directory
        } else {
            temporaryInboxDirectory = nil
        }
        do {
            self.inbox = try CloudToDeviceInbox(
                configuration: inboxConfiguration ?? InboxConfiguration(directory: ""), owner: client, logger: logger)
        } catch {
            throw .storageFailed("the cloud-to-device inbox cannot be opened: \(error)")
        }
        self.logger = logger
        let repair = self.inbox.repair
        if !repair.isClean {
            logger.warning(
                "the inbox was repaired on opening",
                metadata: ["quarantined": "\(repair.quarantinePaths)", "truncatedBytes": "\(repair.truncatedBytes)"])
        }
    }

    deinit {
        if let temporaryInboxDirectory { try? FileManager.default.removeItem(atPath: temporaryInboxDirectory) }
    }

    /// Whether a user-supplied SAS token expires within 120 s and no new one was given.
    var isNewSASTokenRequired: Bool { newTokenRequired.withLockedValue { $0 } }

    /// Sets or clears "a new SAS token is required".
    func setNewSASTokenRequired(_ required: Bool) {
        newTokenRequired.withLockedValue { $0 = required }
    }

    // MARK: Service

    public func run() async throws {
        // Listen before connecting: the client subscribes for each listener; cloud-to-device
        // messages go to the durable inbox, on disk before they are acknowledged.
        client.deliverMessages(to: inbox)
        let messages = inbox.arrivals()
        let methodRequests = client.methodRequests()
        let patches = client.desiredPropertiesPatches()
        let states = client.connectionStateChanges()
        let errors = client.backgroundErrors()
        let tokens = client.newSASTokenRequired()
        let outboxEvents = outbox?.events()
        await withDiscardingTaskGroup { group in
            group.addTask { for await message in messages { self.received(message) } }
            group.addTask { for await request in methodRequests { self.received(request) } }
            group.addTask { for await patch in patches { self.received(desiredPatch: patch) } }
            group.addTask { for await change in states { self.changed(change) } }
            group.addTask { for await error in errors { self.failedInBackground(error) } }
            group.addTask { for await _ in tokens { self.tokenExpiresSoon() } }
            group.addTask { await self.connectAtStart() }
            if let outbox, let outboxEvents {
                group.addTask { for await event in outboxEvents { await self.outboxChanged(event) } }
                group.addTask { await outbox.run() }
                let left = await outbox.status()
                if left.messages > 0 {
                    logger.notice(
                        "the outbox holds messages from before; delivering them",
                        metadata: [
                            "messages": "\(left.messages)", "bytes": "\(left.bytes)",
                            "directory": "\(outbox.configuration.directory)",
                        ])
                }
            }
            try? await gracefulShutdown()
            self.beginDraining()
            if let outbox { await drain(outbox) }
            logger.info("disconnecting from the hub")
            await client.shutdown()
            events.finish()
            group.cancelAll()
        }
        // Once its delivery loop has ended: what is left stays on disk for the next start.
        outbox?.close()
        inbox.close()
    }

    /// Gives the outbox what is left of the shutdown timeout (the HTTP server has stopped
    /// taking requests by now), less a second for disconnecting; what it cannot deliver stays
    /// on disk for the next start, and the log says how much.
    private func drain(_ outbox: TelemetryOutbox) async {
        let began = drainingSince.withLockedValue { $0 } ?? .now
        let budget = began + shutdownTimeout - .seconds(1) - ContinuousClock.now
        let waiting = await outbox.status().messages
        guard waiting > 0 else { return }
        logger.info(
            "delivering the outbox before stopping",
            metadata: ["messages": "\(waiting)", "within": "\(max(budget, .zero))"])
        if budget > .zero, await outbox.waitUntilEmpty(timeout: budget) {
            logger.info("the outbox is delivered")
            return
        }
        let left = await outbox.status()
        logger.warning(
            "stopping with messages in the outbox: they stay on disk and are delivered after the next start",
            metadata: [
                "messages": "\(left.messages)", "bytes": "\(left.bytes)",
                "directory": "\(outbox.configuration.directory)",
            ])
    }

    /// Ends long-polls and event streams at once (they answer 204 or end): the first step of
    /// a graceful shutdown, before the HTTP server waits for its requests.
    public func beginDraining() {
        drainingSince.withLockedValue { since in
            if since == nil { since = .now }
        }
        draining.signal()
        events.finish()
    }

    /// Connects when the sidecar starts; with connection retry on, keeps trying until it
    /// works, the credentials are refused, or the sidecar stops.
    private func connectAtStart() async {
        if let provisioning, provisioning.report.result == nil {
            logger.error(
                "not connecting: the device has no assignment from DPS",
                metadata: ["error": "\(provisioning.report.lastError.map { "\($0)" } ?? "")"])
            return
        }
        // With DPS, a refused identity is registered again once: a hub that still refuses it
        // then is not asked again and again.
        var mayRegisterAgain = provisioning != nil
        while !draining.isSignalled {
            do throws(IoTHubError) {
                try await client.connect()
                logger.info(
                    "connected to the hub",
                    metadata: ["host": "\(client.configuration.gatewayHostName ?? client.hostName)"])
                return
            } catch {
                if !isRepeat(error) {
                    logger.error("could not connect to the hub", metadata: ["error": "\(error)"])
                    events.yield(.error(error))
                    metrics.increment(.backgroundErrors, labels: [("code", error.code)])
                }
                if case .credentialError = error {
                    guard mayRegisterAgain, await registerAgain(after: error) else { return }
                    mayRegisterAgain = false
                    continue
                }
                guard client.configuration.connectionRetry else { return }
            }
            _ = await draining.wait(timeout: client.configuration.connectionRetryInterval)
        }
    }

    // MARK: What the client reports

    /// A message the inbox has kept (the inbox logs drops for capacity itself).
    private func received(_ message: Message) {
        metrics.increment(.messagesReceived)
        events.yield(.message(message, queued: inbox.depth.waiting))
        logger.debug("cloud-to-device message received", metadata: ["messageId": "\(message.messageId ?? "")"])
    }

    private func received(_ request: MethodRequest) {
        methods.deliver(request)
        metrics.increment(.methodRequests)
        events.yield(.method(request))
        logger.debug(
            "method request received", metadata: ["method": "\(request.name)", "requestId": "\(request.requestId)"])
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
        if change.state == .connected, ensureDesiredProperties {
            // A change made while disconnected is seen too: read the whole twin again.
            Task { await self.refreshDesired() }
        }
    }

    private func failedInBackground(_ error: IoTHubError) {
        if isRepeat(error) { return }
        metrics.increment(.backgroundErrors, labels: [("code", error.code)])
        events.yield(.error(error))
        logger.warning("background error", metadata: ["error": "\(error)"])
        if case .credentialError = error, provisioning != nil {
            Task {
                guard await self.registerAgain(after: error) else { return }
                do throws(IoTHubError) {
                    try await self.client.connect()
                } catch {
                    self.logger.error("could not connect after registering again", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    /// The hub refused the identity: with DPS, registers again (the DPS re-provisioning
    /// policies) and tells whether connecting again may work. One refusal reaches the bridge
    /// both from the connect that failed and from the client's background errors: callers
    /// while a registration is under way wait for it instead of registering a second time.
    private func registerAgain(after error: IoTHubError) async -> Bool {
        guard let provisioning, !draining.isSignalled else { return false }
        let registration = reregistration.withLockedValue { current in
            if let current { return current }
            let registration = Task { [self] in
                logger.notice(
                    "the hub refused the identity; registering with DPS again", metadata: ["error": "\(error)"])
                let retry = await provisioning.identityRefused(error)
                events.yield(.provisioning(provisioning.report))
                return retry
            }
            current = registration
            return registration
        }
        let retry = await registration.value
        reregistration.withLockedValue { current in
            if current == registration { current = nil }
        }
        return retry
    }

    /// Whether `error` was just reported: the connect at start and the client's listeners wait
    /// on the same connection attempt, and its failure reaches the bridge from both at once.
    private func isRepeat(_ error: IoTHubError) -> Bool {
        let text = "\(error)"
        let now = ContinuousClock.now
        return lastFailure.withLockedValue { last in
            defer { last = (text, now) }
            guard let last else { return false }
            return last.text == text && now - last.at < .seconds(1)
        }
    }

    private func tokenExpiresSoon() {
        setNewSASTokenRequired(true)
        let expiry = connection.tokenExpiry ?? Date()
        events.yield(.sasToken(expiry: expiry))
        logger.warning(
            "the SAS token expires soon; give a new one with PUT /sastoken",
            metadata: ["expiry": "\(Timestamp.string(expiry))"])
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

    // MARK: What the outbox reports

    /// Logs an outbox event once per episode, and tells `GET /events` listeners with the
    /// outbox's figures. The outbox reports `full` once per episode (until it has room again)
    /// and logs its drops itself; expiries come page by page, and are logged once until the
    /// outbox empties, which is logged only after such trouble.
    private func outboxChanged(_ event: OutboxEvent) async {
        guard let outbox else { return }
        let episode = outboxEpisode.withLockedValue { episode in
            defer { episode.note(event) }
            return episode
        }
        let line: (level: Logger.Level, text: Logger.Message, metadata: Logger.Metadata)?
        switch event {
        case .full where outbox.configuration.whenFull == .rejectNew:
            line = (.warning, "the outbox is full: new messages are refused (507) until it drains", [:])
        case .expired(let count) where !episode.expiring:
            line = (
                .warning, "outbox messages expired before they could be sent; they are dropped", ["expired": "\(count)"]
            )
        case .emptied where episode.troubled:
            line = (.info, "the outbox is empty again", [:])
        default:
            line = nil
        }
        // An outbox that keeps up empties after nearly every message: its figures are read only
        // for a log line or a listener.
        guard line != nil || events.hasListeners else { return }
        let status = await outbox.status()
        if let line {
            let figures: Logger.Metadata = [
                "messages": "\(status.messages)", "bytes": "\(status.bytes)", "limit": "\(status.maximumBytes)",
            ]
            logger.log(level: line.level, line.text, metadata: figures.merging(line.metadata) { $1 })
        }
        events.yield(.outbox(event, status: status))
    }
}

/// What the outbox went through since it last emptied, so that each kind of trouble is logged
/// once.
struct OutboxEpisode {
    /// Messages expired.
    private(set) var expiring = false
    /// It was full, dropped or expired messages.
    private(set) var troubled = false

    mutating func note(_ event: OutboxEvent) {
        switch event {
        case .full, .dropped:
            troubled = true
        case .expired:
            troubled = true
            expiring = true
        case .emptied:
            self = OutboxEpisode()
        }
    }
}
