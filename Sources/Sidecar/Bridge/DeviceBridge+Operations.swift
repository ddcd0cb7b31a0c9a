import FoundationEssentials
import IoTHubDevice
import IoTHubProtocol

/// What the HTTP layer can ask of the device, one area at a time. Each operation takes plain
/// values and answers with plain values or a typed error; none knows about HTTP.
extension DeviceBridge {
    // MARK: Identity

    /// Whether the identity is a module (outputs, module inputs; no file upload).
    var isModule: Bool { client.moduleId != nil }

    /// Seconds for `Retry-After` on connection errors: the client's retry interval.
    var retryAfterSeconds: Int { max(1, Int(client.configuration.connectionRetryInterval.components.seconds)) }

    // MARK: Telemetry

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

    /// Stores messages in the outbox, all or none, once they are on disk; returns their
    /// message ids. The outbox delivers them in this order.
    func accept(_ messages: [Message]) async throws(OutboxError) -> [String] {
        guard let outbox else { throw .storageFailed("this sidecar has no outbox") }
        let ids = try await outbox.accept(messages)
        metrics.increment(.outboxAccepted, by: Double(messages.count))
        return ids
    }

    /// Whether messages can be stored and forwarded (there is an outbox).
    var hasOutbox: Bool { outbox != nil }

    /// The outbox's figures and settings; nil without an outbox.
    func outboxReport() async -> OutboxReport? {
        guard let outbox else { return nil }
        return OutboxReport(
            status: await outbox.status(), configuration: outbox.configuration, defaultDelivery: defaultDelivery)
    }

    // MARK: Cloud-to-device messages

    /// The inbox as a long-poll: the oldest deliverable message, locked for its poller.
    var inboxMessages: LongPollSource<CloudToDeviceInbox.Lease> {
        let inbox = self.inbox
        return LongPollSource(
            prepare: { () async throws(IoTHubError) in
                if inbox.depth.waiting == 0 { try await self.prepareToWait() }
            },
            wait: { timeout in await self.untilDraining { await inbox.receive(timeout: timeout) } },
            // Not counted as a delivery; recorded in the background (the poller is gone).
            giveBack: { lease in Task { try? await inbox.giveBack(lease.lockToken) } })
    }

    /// Removes a received message for good, once that is on disk.
    func completeMessage(lockToken: String) async throws(CloudToDeviceInbox.LeaseError) {
        try await inbox.complete(lockToken)
    }

    /// Makes a received message deliverable again at once (recorded on disk first).
    func abandonMessage(lockToken: String) async throws(CloudToDeviceInbox.LeaseError) {
        try await inbox.abandon(lockToken)
    }

    // MARK: Twin

    /// The whole twin, read from the hub.
    func twin() async throws(IoTHubError) -> Twin {
        try await client.twin()
    }

    /// Patches the reported properties; returns the new version.
    func updateReportedProperties(_ patch: [String: JSONValue]) async throws(IoTHubError) -> Int {
        try await client.updateReportedProperties(patch)
    }

    /// The desired properties as a long-poll: the document once its version passes `since`.
    func desiredUpdates(since: Int) -> LongPollSource<DesiredPropertiesCursor.Update> {
        let cursor = desired
        return LongPollSource(
            prepare: { () async throws(IoTHubError) in
                guard cursor.current(since: since) == nil else { return }
                try await self.prepareToWait()
                if cursor.current(since: 0) == nil {
                    // Never read yet (no connection so far): read the twin now.
                    cursor.replace(desired: try await self.client.twin().desired)
                }
            },
            wait: { timeout in await self.untilDraining { await cursor.poll(since: since, timeout: timeout) } },
            giveBack: { _ in })
    }

    // MARK: Direct methods

    /// Method requests as a long-poll: the oldest waiting request (named `name`, if given).
    func methodRequests(named name: String?) -> LongPollSource<MethodRequest> {
        let methods = self.methods
        return LongPollSource(
            prepare: { () async throws(IoTHubError) in
                if methods.pending == 0 { try await self.prepareToWait() }
            },
            wait: { timeout in await self.untilDraining { await methods.next(name: name, timeout: timeout) } },
            giveBack: { request in methods.requeue(request) })
    }

    /// Why a method answer was not sent.
    enum MethodAnswerError: Error {
        /// No request with this id waits for an answer (answered already, or never handed out).
        case unknownRequest
        /// The request arrived longer ago than the hub waits (``MethodRequestQueue/answerWindow``).
        case expired
        /// The hub did not take it; it may be tried again.
        case notSent(IoTHubError)
    }

    /// Answers the method request `requestId`, once.
    func answerMethodRequest(_ requestId: String, status: Int, payload: Data) async throws(MethodAnswerError) {
        do {
            try methods.claimAnswer(for: requestId)
        } catch .expired {
            throw .expired
        } catch {
            throw .unknownRequest
        }
        do throws(IoTHubError) {
            try await client.respond(MethodResponse(requestId: requestId, status: status, payload: payload))
        } catch {
            // Not delivered: the answer may be tried again.
            methods.releaseClaim(for: requestId)
            throw .notSent(error)
        }
    }

    // MARK: File upload

    /// Where to upload `blobName`, from the hub.
    func storageInfo(forBlob blobName: String) async throws(IoTHubError) -> StorageInfo {
        try await client.storageInfo(forBlob: blobName)
    }

    /// Tells the hub how an upload ended.
    func notifyBlobUploadStatus(correlationId: String, isSuccess: Bool, statusCode: Int, statusDescription: String)
        async throws(IoTHubError)
    {
        try await client.notifyBlobUploadStatus(
            correlationId: correlationId, isSuccess: isSuccess, statusCode: statusCode,
            statusDescription: statusDescription)
    }

    /// Uploads a file in one call (storage info, the upload, the notification). Errors after
    /// the hub gave a blob are ``BlobUploadFailure``s.
    func uploadBlob<Body: AsyncSequence>(named blobName: String, length: Int, contentType: String?, body: Body)
        async throws -> BlobUploadResult
    where Body.Element == Data {
        try await client.uploadBlob(named: blobName, length: length, contentType: contentType, body: body)
    }

    // MARK: Connection

    /// Who the sidecar is and how its connection is now.
    func status() -> DeviceStatus {
        let connection = self.connection
        let configuration = client.configuration
        return DeviceStatus(
            hostName: client.hostName, deviceId: client.deviceId, moduleId: client.moduleId,
            gatewayHostName: configuration.gatewayHostName,
            authentication: connection.credential, state: connection.state, since: connection.since,
            lastError: connection.lastError,
            tokenExpiry: connection.tokenExpiry, isNewSASTokenRequired: isNewSASTokenRequired,
            transport: configuration.websockets ? "mqtt-websockets" : "mqtt",
            // The proxy's description leaves its password out.
            proxy: configuration.proxyOptions.map { "\($0)" }, modelId: configuration.announcedModelId)
    }

    /// Registers with DPS again (`POST /provisioning`); nil when the identity is not from DPS.
    func reprovision() async throws(IoTHubError) -> ProvisioningReport? {
        guard let provisioning else { return nil }
        do throws(IoTHubError) {
            let report = try await provisioning.reprovision()
            events.yield(.provisioning(report))
            return report
        } catch {
            events.yield(.provisioning(provisioning.report))
            throw error
        }
    }

    /// Connects (auto-connect aside, the only way after ``disconnect()``).
    func connect() async throws(IoTHubError) {
        try await client.connect()
    }

    /// Disconnects until the next connect.
    func disconnect() async {
        await client.disconnect()
    }

    /// Why a SAS token was not taken.
    enum SASTokenUpdateError: Error {
        /// The identity authenticates otherwise (`symmetricKey` or `x509`).
        case notASASTokenIdentity(authentication: CredentialKind)
        case refused(IoTHubError)
    }

    /// Replaces the SAS token of an identity that was given one, and clears the "new token
    /// required" flag.
    func updateSASToken(_ text: String) async throws(SASTokenUpdateError) {
        let authentication = connection.credential
        guard authentication == .sasToken else { throw .notASASTokenIdentity(authentication: authentication) }
        do throws(IoTHubError) {
            try await client.updateSASToken(text)
        } catch {
            throw .refused(error)
        }
        setNewSASTokenRequired(false)
    }

    // MARK: Events and metrics

    /// The events from now on, led by one that says how the connection is now.
    func eventStream() -> (current: SidecarEvent, later: AsyncStream<SidecarEvent>) {
        let later = events.stream()
        let connection = self.connection
        return (
            .connection(ConnectionStateChange(state: connection.state, since: connection.since, reason: nil)), later
        )
    }

    /// The metrics in the Prometheus text format, with the gauges read now.
    func metricsExposition() async -> String {
        if let report = await outboxReport() {
            let status = report.status
            metrics.set(.outboxMessages, to: Double(status.messages))
            metrics.set(.outboxBytes, to: Double(status.bytes))
            metrics.set(.outboxMaximumBytes, to: Double(status.maximumBytes))
            metrics.set(.outboxOldestAge, to: report.oldestAge(now: Date()) ?? 0)
            metrics.set(.outboxFull, to: status.isFull ? 1 : 0)
            metrics.set(.outboxDelivered, to: Double(status.delivered))
            metrics.set(.outboxExpired, to: Double(status.expired))
            metrics.set(.outboxDropped, to: Double(status.dropped))
            metrics.set(.outboxRejected, to: Double(status.rejected))
            metrics.set(.outboxQuarantinedSpans, to: Double(status.quarantinedSpans))
            metrics.set(.outboxTruncatedBytes, to: Double(status.truncatedBytes))
        }
        let depth = inbox.depth
        metrics.set(.inboxMessages, to: Double(depth.waiting + depth.locked))
        metrics.set(.inboxDropped, to: Double(depth.dropped))
        metrics.set(.pendingMethodRequests, to: Double(methods.pending))
        metrics.set(.connected, to: client.isConnected ? 1 : 0)
        metrics.set(.reconnectAttempts, to: Double(client.reconnectionAttempts))
        return metrics.exposition()
    }

    // MARK: Waiting

    /// Before a long-poll waits: a disconnected client connects first with auto-connect, or
    /// the poll fails at once without it.
    func prepareToWait() async throws(IoTHubError) {
        guard connection.state == .disconnected else { return }
        guard client.configuration.autoConnect else {
            throw .noConnectionError("the client is not connected and auto_connect is off; POST /connect first")
        }
        try await client.connect()
    }

    /// Runs a wait that ends early (with nil) when the sidecar begins to shut down. The
    /// operation's own result is always returned, so nothing it took is lost.
    func untilDraining<T: Sendable>(_ operation: @escaping @Sendable () async -> T?) async -> T? {
        await withTaskGroup(of: DrainRace<T>.self) { group in
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

    /// The client's connection figures: the one place the bridge reads them.
    var connection: ClientStatus {
        client.status
    }
}

/// Which of an operation and the start of a shutdown came first.
private enum DrainRace<T: Sendable>: Sendable {
    case finished(T?)
    case draining
}
