import AsyncPrimitives
import Foundation
import IoTHubProtocol

// MARK: Subscriptions and incoming messages

extension IoTHubDeviceClient {
    /// What the client subscribes to, each once per connection, when someone listens.
    enum Feature: Hashable, CaseIterable {
        case cloudToDevice, methods, twinResponses, desiredProperties
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
        let (mqtt, missing) = state.withLockedValue { state -> (MosquittoClient?, [Feature]) in
            features.forEach { state.enabled.insert($0) }
            guard state.phase == .connected else { return (nil, []) }
            return (state.mqtt, features.filter { !state.subscribed.contains($0) })
        }
        guard let mqtt, !missing.isEmpty else { return }
        let timeout = configuration.operationTimeout
        let filters = missing.map(filter(for:))
        let granted = try await withTimeout(timeout, timeoutError: { .operationTimeout("no SUBACK from the hub within \(timeout)") }) { () async throws(IoTHubError) -> [Int32] in
            try await mqtt.subscribe(filters)
        }
        let refused = zip(missing, granted).filter { $0.1 == 0x80 }.map { filter(for: $0.0) }
        guard refused.isEmpty else { throw .serviceError(status: 403, message: "the hub refused the subscription to \(refused.joined(separator: ", "))") }
        state.withLockedValue { state in missing.forEach { state.subscribed.insert($0) } }
    }

    func resubscribe() async {
        let enabled = state.withLockedValue { Array($0.enabled) }
        guard !enabled.isEmpty else { return }
        do throws(IoTHubError) {
            try await ensureSubscribed(enabled)
        } catch {
            errorStreams.yield(error)
        }
    }

    func enableInBackground(_ feature: Feature) {
        state.withLockedValue { _ = $0.enabled.insert(feature) }
        Task {
            do throws(IoTHubError) {
                try await ensureConnectionIfAllowed()
                try await ensureSubscribed([feature])
                if feature == .desiredProperties { await refreshDesiredProperties() }
            } catch {
                errorStreams.yield(error)
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
            twinResponses.complete(response.requestId, with: .success(TwinReply(status: response.status, version: response.version, payload: payload)))
        } else if let request = MethodRequest(topic: topic, payload: payload) {
            methodStreams.yield(request)
        } else if let patch = DesiredPropertiesPatchTopic(parsing: topic) {
            guard let json = try? JSONValue(parsing: payload), json.objectValue != nil else {
                errorStreams.yield(.clientError("the hub sent a desired-properties patch that is not a JSON object"))
                return
            }
            state.withLockedValue { $0.lastDesiredVersion = patch.version }
            desiredStreams.yield(json)
        } else if moduleId == nil, let message = CloudToDeviceTopic(parsing: topic), message.deviceId == deviceId {
            messageStreams.yield(Message(payload: payload, propertyBag: message.properties))
        } else if let input = ModuleInputTopic(parsing: topic), input.deviceId == deviceId, input.moduleId == moduleId {
            messageStreams.yield(Message(payload: payload, propertyBag: input.properties, inputName: input.inputName))
        } else {
            logger.debug("message on an unexpected topic", metadata: ["topic": "\(topic)"])
        }
    }
}
