import Foundation
import IoTHubProtocol
import NIOCore

extension Hub {
    /// Counts a CONNECT, accepted or not.
    func recordConnectAttempt() {
        state.withLockedValue { $0.connectAttempts += 1 }
    }

    /// A new connection of an authenticated identity, with the next connection id; not yet
    /// attached (``attach(_:cleanSession:now:)``).
    func makeConnection(
        for key: IdentityKey, transport: MQTTTransport, userAgent: String? = nil, modelId: String? = nil,
        channel: any Channel
    ) -> DeviceConnection {
        let id = state.withLockedValue { state in
            state.lastConnectionId += 1
            return state.lastConnectionId
        }
        return DeviceConnection(
            id: id, key: key, transport: transport, userAgent: userAgent, modelId: modelId, channel: channel)
    }

    /// Makes `connection` the live connection of its session, and emits a connection-state
    /// event (`deviceConnected`, after `deviceDisconnected` for a connection it replaces).
    ///
    /// - Returns: whether a session was present, the publishes to send again (DUP set), and the
    ///   connection it replaces, which the caller closes.
    func attach(_ connection: DeviceConnection, cleanSession: Bool, now: Date = Date())
        -> (sessionPresent: Bool, resend: [MQTTPacket], replaced: DeviceConnection?)
    {
        let result = state.withLockedValue { state -> (Bool, [MQTTPacket], DeviceConnection?) in
            let key = connection.key
            var session = state.sessions[key] ?? SessionState(cleanSession: cleanSession)
            let replaced = session.connection
            var sessionPresent = state.sessions[key] != nil && !cleanSession
            if cleanSession {
                // A clean session starts empty: it forgets subscriptions, and cloud-to-device
                // messages that were in flight are delivered again (they stay queued until acknowledged).
                session = SessionState(cleanSession: true)
                state.identities[key]?.subscriptions = [:]
                sessionPresent = false
            } else if state.sessions[key] == nil, !(state.identities[key]?.subscriptions.isEmpty ?? true) {
                // Subscriptions survived a restart of the hub.
                sessionPresent = true
            }
            session.cleanSession = cleanSession
            session.connection = connection
            session.inflight.removeAll { $0.message.kind == .transient }
            let resend: [MQTTPacket] = session.inflight.map { item in
                var publish = item.message.publish
                publish.duplicate = true
                return .publish(publish)
            }
            state.sessions[key] = session
            state.identities[key]?.lastActivityTime = now
            state.identities[key]?.connectionStateUpdatedTime = now
            // Each CONNECT sets the twin's model id to the one it announces; one without a model
            // id clears it (whether IoT Hub itself clears it then is not verified here).
            state.identities[key]?.modelId = connection.modelId
            if replaced != nil { routeConnectionState(of: key, connected: false, at: now, in: &state) }
            routeConnectionState(of: key, connected: true, at: now, in: &state)
            return (sessionPresent, resend, replaced)
        }
        stateChanged()
        changes.signal()
        logger.info("device connected", metadata: ["client": "\(connection.key)", "cleanSession": "\(cleanSession)"])
        return result
    }

    /// Forgets `connection` when it closes, with a connection-state event
    /// (`deviceDisconnected`) if it was the session's live connection. A clean session ends
    /// with it.
    func detach(_ connection: DeviceConnection, now: Date = Date()) {
        let (detached, abandoned) = state.withLockedValue { state -> (Bool, [String]) in
            let key = connection.key
            guard var session = state.sessions[key], session.connection === connection else { return (false, []) }
            session.connection = nil
            session.inflight.removeAll { $0.message.kind == .transient }
            if session.cleanSession {
                state.sessions[key] = nil
                state.identities[key]?.subscriptions = [:]
            } else {
                state.sessions[key] = session
            }
            state.identities[key]?.connectionStateUpdatedTime = now
            routeConnectionState(of: key, connected: false, at: now, in: &state)
            // Method calls to a device that went away fail now rather than at their timeout.
            let abandoned = state.pendingMethods.filter { $0.value == key }.map(\.key)
            for requestId in abandoned { state.pendingMethods[requestId] = nil }
            return (true, abandoned)
        }
        for requestId in abandoned {
            methodReplies.complete(requestId, with: .failure(.deviceNotOnline(connection.key)))
        }
        if detached {
            stateChanged()
            changes.signal()
            logger.info("device disconnected", metadata: ["client": "\(connection.key)"])
        }
    }

    /// The filters a client may subscribe to, with the QoS granted: IoT Hub's topics only.
    func subscribe(_ connection: DeviceConnection, _ subscriptions: [SubscribePacket.Subscription]) -> [UInt8] {
        let key = connection.key
        var allowed: Set<String> = [
            TopicFilter.methodRequests, TopicFilter.twinResponses, TopicFilter.desiredPropertiesPatches,
        ]
        if let moduleId = key.moduleId {
            allowed.insert(TopicFilter.moduleInputs(deviceId: key.deviceId, moduleId: moduleId))
        } else {
            allowed.insert(TopicFilter.cloudToDevice(deviceId: key.deviceId))
        }
        let codes: [UInt8] = state.withLockedValue { state in
            subscriptions.map { subscription in
                guard allowed.contains(subscription.topicFilter) else { return SubackPacket.failure }
                let granted = min(subscription.qos, .atLeastOnce).rawValue
                state.identities[key]?.subscriptions[subscription.topicFilter] = granted
                return granted
            }
        }
        stateChanged()
        return codes
    }

    func unsubscribe(_ connection: DeviceConnection, _ filters: [String]) {
        state.withLockedValue { state in
            for filter in filters { state.identities[connection.key]?.subscriptions[filter] = nil }
        }
        stateChanged()
    }

    /// Handles a PUBACK from the device: a cloud-to-device message is then complete.
    func acknowledge(_ connection: DeviceConnection, packetId: UInt16) {
        let completed = state.withLockedValue { state -> Bool in
            let key = connection.key
            guard var session = state.sessions[key], session.connection === connection,
                let index = session.inflight.firstIndex(where: { $0.packetId == packetId })
            else { return false }
            let item = session.inflight.remove(at: index)
            state.sessions[key] = session
            if case .cloudToDevice(let lockToken) = item.message.kind {
                state.identities[key]?.cloudToDevice.removeAll { $0.lockToken == lockToken }
                return true
            }
            return false
        }
        if completed { stateChanged() }
    }

    /// Queues a publish for `key` if it is connected and subscribed to a filter matching the
    /// topic. Must be called with the lock held; returns the connection and packet to send.
    static func preparePublish(
        in state: inout State, to key: IdentityKey, topic: String, payload: ByteBuffer, kind: OutboundKind
    ) -> (DeviceConnection, MQTTPacket)? {
        guard var session = state.sessions[key], let connection = session.connection,
            let subscriptions = state.identities[key]?.subscriptions,
            let qos = subscriptions.first(where: { TopicFilterMatching.matches(filter: $0.key, topic: topic) })?.value
        else { return nil }
        var publish = PublishPacket(topic: topic, payload: payload, qos: qos == 0 ? .atMostOnce : .atLeastOnce)
        if publish.qos == .atLeastOnce {
            let packetId = session.allocatePacketId()
            publish.packetId = packetId
            session.inflight.append((packetId, InflightPublish(publish: publish, kind: kind)))
            state.sessions[key] = session
        }
        return (connection, .publish(publish))
    }
}
