import AsyncPrimitives
import FoundationEssentials
import IoTHubProtocol

// MARK: Subscriptions and incoming messages

extension IoTHubDeviceClient {
    /// What the client subscribes to, each once per connection, while it is wanted.
    enum Feature: Hashable, CaseIterable {
        case cloudToDevice, methods, twinResponses, desiredProperties
    }

    /// What is wanted, and what is subscribed on which connection and may be in the hub's session.
    ///
    /// A feature is wanted while its stream has a listener (cloud-to-device messages also while
    /// a durable inbox is given); twin responses from the first twin operation on. The client
    /// subscribes what is wanted and unsubscribes what is not, like the Python SDK enabling and
    /// disabling a feature when a handler is set or set to `None`.
    struct Subscriptions {
        /// Wanted whether or not anyone listens (twin responses, once a twin operation ran).
        var sticky: Set<Feature> = []
        /// Features a listener started for since the reconciler last looked: it connects for
        /// them (when auto-connect allows).
        var pendingEnables: Set<Feature> = []
        /// The reconciler (one task at a time) runs, and has something new to look at.
        var reconciling = false
        var dirty = false
        /// A connection was made since the reconciler last looked.
        var reconnected = false
        /// A connect the reconciler made for listeners failed and was reported, and no
        /// connection has been made since: the same outage is not reported again for later
        /// listeners.
        var connectFailureReported = false
        /// What the hub's session may hold: subscribed at some point (the session outlives the
        /// connection: clean session is off) and not unsubscribed since.
        private(set) var inHubSession: Set<Feature> = []
        /// The connection (its attempt's id) that `subscribed` is about.
        private var connectionId: Int?
        private var subscribed: Set<Feature> = []

        func isSubscribed(_ feature: Feature, on connection: Int) -> Bool {
            connectionId == connection && subscribed.contains(feature)
        }

        /// A SUBSCRIBE for `features` is about to go out: from now on the hub's session may hold them.
        mutating func subscribing(_ features: [Feature]) {
            inHubSession.formUnion(features)
        }

        mutating func markSubscribed(_ features: [Feature], on connection: Int) {
            if connectionId != connection {
                connectionId = connection
                subscribed = []
            }
            subscribed.formUnion(features)
        }

        /// The hub acknowledged the UNSUBSCRIBE of `features`.
        mutating func markUnsubscribed(_ features: [Feature]) {
            inHubSession.subtract(features)
            subscribed.subtract(features)
        }
    }

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

    /// The features wanted now: those with a listener, the durable inbox's, the sticky ones.
    func wantedFeatures() -> Set<Feature> {
        var wanted = subscriptions.withLockedValue { $0.sticky }
        if messageStreams.hasListeners || inbox.withLockedValue({ $0 != nil }) { wanted.insert(.cloudToDevice) }
        if methodStreams.hasListeners { wanted.insert(.methods) }
        if desiredStreams.hasListeners { wanted.insert(.desiredProperties) }
        return wanted
    }

    /// Wanted from now on whether or not anyone listens; subscribed on the current connection
    /// before this returns.
    func ensureSubscribed(_ features: [Feature]) async throws(IoTHubError) {
        subscriptions.withLockedValue { $0.sticky.formUnion(features) }
        guard let current = lifecycle.withLockedValue({ $0.currentConnection }) else { return }
        let missing = subscriptions.withLockedValue { subscriptions in
            features.filter { !subscriptions.isSubscribed($0, on: current.id) }
        }
        try await subscribe(missing, on: current)
    }

    private func subscribe(_ features: [Feature], on current: (connection: MosquittoClient, id: Int))
        async throws(IoTHubError)
    {
        guard !features.isEmpty else { return }
        subscriptions.withLockedValue { $0.subscribing(features) }
        let mqtt = current.connection
        let timeout = configuration.operationTimeout
        let filters = features.map(filter(for:))
        let granted = try await withTimeout(
            timeout, timeoutError: { .operationTimeout("no SUBACK from the hub within \(timeout)") }
        ) { () async throws(IoTHubError) -> [Int32] in
            try await mqtt.subscribe(filters)
        }
        let refused = zip(features, granted).filter { $0.1 == 0x80 }.map { filter(for: $0.0) }
        guard refused.isEmpty else {
            throw .serviceError(
                status: 403, message: "the hub refused the subscription to \(refused.joined(separator: ", "))")
        }
        subscriptions.withLockedValue { $0.markSubscribed(features, on: current.id) }
    }

    private func unsubscribe(_ features: [Feature], on current: (connection: MosquittoClient, id: Int))
        async throws(IoTHubError)
    {
        guard !features.isEmpty else { return }
        let mqtt = current.connection
        let timeout = configuration.operationTimeout
        let filters = features.map(filter(for:))
        try await withTimeout(
            timeout, timeoutError: { .operationTimeout("no UNSUBACK from the hub within \(timeout)") }
        ) { () async throws(IoTHubError) in
            try await mqtt.unsubscribe(filters)
        }
        subscriptions.withLockedValue { $0.markUnsubscribed(features) }
        logger.debug("unsubscribed", metadata: ["filters": "\(filters)"])
    }

    /// After every (re)connect: the reconciler subscribes what is wanted, unsubscribes what the
    /// hub's session holds and nobody wants, and checks the desired properties.
    func reconcileAfterConnect() {
        subscriptions.withLockedValue {
            $0.connectFailureReported = false
            $0.reconnected = true
        }
        reconcileInBackground()
    }

    /// Listeners came or went on the stream of `feature`.
    func listenersChanged(_ feature: Feature, _ change: ListenerChange) {
        if case .added = change { subscriptions.withLockedValue { _ = $0.pendingEnables.insert(feature) } }
        reconcileInBackground()
    }

    /// Makes the subscriptions match what is wanted, in the background: one task at a time,
    /// which looks again as long as something changed meanwhile. A listener that starts
    /// subscribes on this connection (made now when auto-connect allows) and after every
    /// reconnect; when the last listener of a feature goes, the feature is unsubscribed (at the
    /// next connect when the client is not connected), so the hub keeps cloud-to-device
    /// messages queued and fails method calls at once, as for a device that does not listen.
    ///
    /// A program that starts three listeners while the hub cannot be reached hears of the
    /// failure to connect for them once, not once per listener (until a connection is made).
    func reconcileInBackground() {
        let start = subscriptions.withLockedValue { state -> Bool in
            state.dirty = true
            defer { state.reconciling = true }
            return !state.reconciling
        }
        guard start else { return }
        let started = background.run { await self.reconcile() }
        if !started { subscriptions.withLockedValue { $0.reconciling = false } }
    }

    private func reconcile() async {
        while let (enables, reconnected) = subscriptions.withLockedValue({ state -> (Set<Feature>, Bool)? in
            guard state.dirty else {
                state.reconciling = false
                return nil
            }
            defer {
                state.dirty = false
                state.pendingEnables = []
                state.reconnected = false
            }
            return (state.pendingEnables, state.reconnected)
        }) {
            let wanted = wantedFeatures()
            if !enables.isDisjoint(with: wanted) {
                do throws(IoTHubError) {
                    try await ensureConnectionIfAllowed()
                } catch {
                    // Reported once per outage: what listeners asked for meanwhile is
                    // subscribed at the next connect, like everything wanted.
                    let report = subscriptions.withLockedValue { state -> Bool in
                        defer { state.connectFailureReported = true }
                        return !state.connectFailureReported
                    }
                    if report { errorStreams.yield(error) }
                    continue
                }
            }
            guard let current = lifecycle.withLockedValue({ $0.currentConnection }) else { continue }
            // Looked at again after the wait for the connection: an operation may have made
            // twin responses wanted (and subscribed them) meanwhile. The sticky features are
            // read under the same lock as the hub's session, which they join first, so one
            // subscribed since is never taken for unwanted.
            let wantedNow = wantedFeatures()
            let (missing, unwanted) = subscriptions.withLockedValue { state in
                (
                    Feature.allCases.filter { wantedNow.contains($0) && !state.isSubscribed($0, on: current.id) },
                    Feature.allCases.filter {
                        !wantedNow.contains($0) && !state.sticky.contains($0) && state.inHubSession.contains($0)
                    }
                )
            }
            // Each on its own: an UNSUBACK that does not come does not keep a listener waiting.
            do throws(IoTHubError) {
                try await unsubscribe(unwanted, on: current)
            } catch {
                errorStreams.yield(error)
            }
            do throws(IoTHubError) {
                try await subscribe(missing, on: current)
            } catch {
                errorStreams.yield(error)
                continue
            }
            guard missing.contains(.desiredProperties) else { continue }
            // A listener that starts gets the desired properties if they changed since the
            // last it saw; after a reconnect, only with `ensure_desired_properties`.
            if enables.contains(.desiredProperties) || (reconnected && configuration.ensureDesiredProperties) {
                await refreshDesiredProperties()
            }
        }
    }

    /// Connects for a listener only when auto-connect allows it; otherwise the subscription
    /// happens at the next connect.
    private func ensureConnectionIfAllowed() async throws(IoTHubError) {
        if configuration.autoConnect || isConnected { try await ensureConnection() }
    }

    // MARK: Incoming messages

    func route(topic: String, payload: Data) {
        if let response = TwinResponseTopic(parsing: topic) {
            twinResponses.complete(
                response.requestId,
                with: .success(TwinReply(status: response.status, version: response.version, payload: payload)))
        } else if let request = MethodRequest(topic: topic, payload: payload) {
            methodStreams.yield(request)
        } else if let patch = DesiredPropertiesPatchTopic(parsing: topic) {
            guard let json = try? JSONValue(parsing: payload), json.objectValue != nil else {
                errorStreams.yield(.clientError("the hub sent a desired-properties patch that is not a JSON object"))
                return
            }
            lastDesiredVersion.withLockedValue { $0 = patch.version }
            desiredStreams.yield(json)
        } else if moduleId == nil, let message = CloudToDeviceTopic(parsing: topic), message.deviceId == deviceId {
            received(Message(payload: payload, propertyBag: message.properties))
        } else if let input = ModuleInputTopic(parsing: topic), input.deviceId == deviceId, input.moduleId == moduleId {
            received(Message(payload: payload, propertyBag: input.properties, inputName: input.inputName))
        } else {
            logger.debug("message on an unexpected topic", metadata: ["topic": "\(topic)"])
        }
    }
}
