import AsyncPrimitives
import Foundation
import IoTHubProtocol

// MARK: Subscriptions and incoming messages

extension IoTHubDeviceClient {
    /// What the client subscribes to, each once per connection, when someone listens.
    enum Feature: Hashable, CaseIterable {
        case cloudToDevice, methods, twinResponses, desiredProperties
    }

    /// What listeners asked for, and what is subscribed on which connection.
    struct Subscriptions {
        /// Subscribed after every connect.
        var enabled: Set<Feature> = []
        /// Enabled by listeners and not yet handled by the background task that enables them.
        var pendingEnables: Set<Feature> = []
        /// That task runs.
        var enabling = false
        /// A connect the task made for listeners failed and was reported, and no connection
        /// has been made since: the same outage is not reported again for later listeners.
        var connectFailureReported = false
        /// The connection (its attempt's id) that `subscribed` is about.
        private var connectionId: Int?
        private var subscribed: Set<Feature> = []

        func isSubscribed(_ feature: Feature, on connection: Int) -> Bool {
            connectionId == connection && subscribed.contains(feature)
        }

        mutating func markSubscribed(_ features: [Feature], on connection: Int) {
            if connectionId != connection {
                connectionId = connection
                subscribed = []
            }
            subscribed.formUnion(features)
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

    /// Subscribes to `feature` on the current connection if that has not happened yet.
    func ensureSubscribed(_ features: [Feature]) async throws(IoTHubError) {
        let current = lifecycle.withLockedValue { $0.currentConnection }
        let missing = subscriptions.withLockedValue { subscriptions -> [Feature] in
            subscriptions.enabled.formUnion(features)
            guard let current else { return [] }
            return features.filter { !subscriptions.isSubscribed($0, on: current.id) }
        }
        guard let current, !missing.isEmpty else { return }
        let mqtt = current.connection
        let timeout = configuration.operationTimeout
        let filters = missing.map(filter(for:))
        let granted = try await withTimeout(
            timeout, timeoutError: { .operationTimeout("no SUBACK from the hub within \(timeout)") }
        ) { () async throws(IoTHubError) -> [Int32] in
            try await mqtt.subscribe(filters)
        }
        let refused = zip(missing, granted).filter { $0.1 == 0x80 }.map { filter(for: $0.0) }
        guard refused.isEmpty else {
            throw .serviceError(
                status: 403, message: "the hub refused the subscription to \(refused.joined(separator: ", "))")
        }
        subscriptions.withLockedValue { $0.markSubscribed(missing, on: current.id) }
    }

    func resubscribe() async {
        let enabled = subscriptions.withLockedValue { Array($0.enabled) }
        guard !enabled.isEmpty else { return }
        do throws(IoTHubError) {
            try await ensureSubscribed(enabled)
        } catch {
            errorStreams.yield(error)
        }
    }

    /// A listener asked for `feature`: it is subscribed from now on, on this connection (made
    /// now when auto-connect allows) and after every reconnect.
    ///
    /// One background task at a time enables what listeners asked for, all of it together: a
    /// program that starts three listeners while the hub cannot be reached hears of the
    /// failure to connect for them once, not once per listener (until a connection is made).
    func enableInBackground(_ feature: Feature) {
        let start = subscriptions.withLockedValue { state -> Bool in
            state.enabled.insert(feature)
            state.pendingEnables.insert(feature)
            defer { state.enabling = true }
            return !state.enabling
        }
        guard start else { return }
        let started = background.run {
            while let features = self.subscriptions.withLockedValue({ state -> Set<Feature>? in
                guard !state.pendingEnables.isEmpty else {
                    state.enabling = false
                    return nil
                }
                defer { state.pendingEnables = [] }
                return state.pendingEnables
            }) {
                do throws(IoTHubError) {
                    try await self.ensureConnectionIfAllowed()
                } catch {
                    // Reported once per outage: what listeners asked for meanwhile is
                    // subscribed at the next connect, like everything enabled.
                    let report = self.subscriptions.withLockedValue { state -> Bool in
                        state.pendingEnables = []
                        defer { state.connectFailureReported = true }
                        return !state.connectFailureReported
                    }
                    if report { self.errorStreams.yield(error) }
                    continue
                }
                do throws(IoTHubError) {
                    try await self.ensureSubscribed(Feature.allCases.filter(features.contains))
                    if features.contains(.desiredProperties) { await self.refreshDesiredProperties() }
                } catch {
                    self.errorStreams.yield(error)
                }
            }
        }
        if !started { subscriptions.withLockedValue { $0.enabling = false } }
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
