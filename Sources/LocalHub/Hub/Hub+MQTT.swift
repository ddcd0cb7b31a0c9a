import Foundation
import IoTHubProtocol
import NIOCore

/// What a CONNECT presented, for authentication.
struct ConnectCredentials: Sendable {
    var clientId: String
    var username: String?
    var password: ByteBuffer?
    /// DER of the client certificate from the TLS handshake, if one was presented.
    var clientCertificateDER: [UInt8]?
}

extension Hub {
    /// Checks a CONNECT like IoT Hub: client id and user name shape, identity exists and is
    /// enabled, then the SAS token (signature, expiry, resource) or the X.509 thumbprint.
    ///
    /// - Returns: the identity and, for SAS, when the token expires (the hub then closes the
    ///   connection, as IoT Hub does).
    func authenticate(_ credentials: ConnectCredentials, now: Date = Date()) -> Result<(IdentityKey, Date?), ConnackPacket.ReturnCode> {
        guard let key = IdentityKey(clientId: credentials.clientId) else { return .failure(.identifierRejected) }
        guard let usernameText = credentials.username, let username = MQTTUsername(parsing: usernameText),
              username.clientId == credentials.clientId,
              username.hostName.lowercased() == hostName.lowercased()
        else { return .failure(.badUsernameOrPassword) }

        let (record, refused) = state.withLockedValue { state in
            (state.identities[key], state.faults.refusesConnections(at: now))
        }
        if refused { return .failure(.serverUnavailable) }
        guard let record, record.status == "enabled" else { return .failure(.notAuthorized) }

        switch record.authentication.type {
        case .sas:
            guard let password = credentials.password,
                  let text = password.getString(at: password.readerIndex, length: password.readableBytes),
                  let token = try? SASToken(parsing: text)
            else { return .failure(.badUsernameOrPassword) }
            let expectedResource = SASToken.resourceURI(hostName: hostName, deviceId: key.deviceId, moduleId: key.moduleId)
            guard token.resourceURI.lowercased() == expectedResource.lowercased(), token.keyName == nil,
                  !token.isExpired(at: now)
            else { return .failure(.notAuthorized) }
            let keys = [record.authentication.primaryKey, record.authentication.secondaryKey].compactMap { $0 }
            guard keys.contains(where: { token.isSigned(withKey: $0) }) else { return .failure(.notAuthorized) }
            return .success((key, token.expiryDate))
        case .selfSigned, .certificateAuthority:
            guard let der = credentials.clientCertificateDER else { return .failure(.notAuthorized) }
            if record.authentication.type == .selfSigned {
                let presented = [CertificateThumbprint.sha1(der), CertificateThumbprint.sha256(der)]
                let registered = [record.authentication.primaryThumbprint, record.authentication.secondaryThumbprint]
                    .compactMap { $0?.uppercased() }
                guard presented.contains(where: registered.contains) else { return .failure(.notAuthorized) }
            } else {
                guard CertificateInspection.commonName(ofDER: der) == key.deviceId else { return .failure(.notAuthorized) }
            }
            return .success((key, nil))
        case .none:
            return .failure(.notAuthorized)
        }
    }

    /// Counts a CONNECT, accepted or not.
    func recordConnectAttempt() {
        state.withLockedValue { $0.connectAttempts += 1 }
    }

    /// A new connection of an authenticated identity, with the next connection id; not yet
    /// attached (``attach(_:cleanSession:now:)``).
    func makeConnection(for key: IdentityKey, transport: MQTTTransport, channel: any Channel) -> DeviceConnection {
        let id = state.withLockedValue { state in
            state.lastConnectionId += 1
            return state.lastConnectionId
        }
        return DeviceConnection(id: id, key: key, transport: transport, channel: channel)
    }

    /// Makes `connection` the live connection of its session.
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
            return (sessionPresent, resend, replaced)
        }
        stateChanged()
        changes.signal()
        logger.info("device connected", metadata: ["client": "\(connection.key)", "cleanSession": "\(cleanSession)"])
        return result
    }

    /// Forgets `connection` when it closes. A clean session ends with it.
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
        var allowed: Set<String> = [TopicFilter.methodRequests, TopicFilter.twinResponses, TopicFilter.desiredPropertiesPatches]
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

    /// Records a telemetry message from `connection`. The topic's identity must be the connection's.
    /// Why a telemetry publish was not accepted; the connection is then closed, as IoT Hub does.
    enum TelemetryRefusal: Error {
        case foreignIdentity
        case tooLarge(size: Int)
    }

    func receiveTelemetry(
        from connection: DeviceConnection, topic: TelemetryTopic, rawProperties: Substring, payload: ByteBuffer, redelivered: Bool = false,
        now: Date = Date()
    ) throws(TelemetryRefusal) {
        guard topic.deviceId == connection.key.deviceId, topic.moduleId == connection.key.moduleId else { throw .foreignIdentity }
        let message = Message(payload: Data(payload.readableBytesView), propertyBag: topic.properties)
        guard message.size <= Message.maximumSize else { throw .tooLarge(size: message.size) }
        telemetry.append(
            TelemetryRecord(
                enqueuedTime: now, deviceId: topic.deviceId, moduleId: topic.moduleId, message: message, rawProperties: String(rawProperties),
                redelivered: redelivered),
            size: payload.readableBytes + rawProperties.utf8.count + 64)
    }

    /// The current acknowledgement delay fault.
    var acknowledgementDelay: TimeAmount? {
        let milliseconds = state.withLockedValue { $0.faults.acknowledgementDelayMilliseconds }
        return milliseconds > 0 ? .milliseconds(Int64(milliseconds)) : nil
    }
}
