import Foundation
import IoTHubProtocol
import Logging
import NIOCore
import NIOSSL

/// One device's MQTT connection to the hub: CONNECT and authentication, then the IoT Hub
/// topics, over TLS or over WebSockets (the pipeline below this handler decides which).
///
/// Runs on the channel's event loop. Acknowledgements are written without a flush and flushed
/// once per read burst, so a client that pipelines QoS 1 publishes gets its PUBACKs in batches.
final class MQTTConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = MQTTPacket
    typealias OutboundOut = MQTTPacket

    /// IoT Hub's largest accepted keep-alive.
    static let maximumKeepAlive: UInt16 = 1740

    private enum State {
        case awaitingConnect
        case connected(DeviceConnection)
        /// A device talking to the provisioning service (docs/ARCHITECTURE.md, Device Provisioning Service).
        case provisioning(ProvisioningMQTTSession)
        case closed
    }

    private let hub: Hub
    private let transport: MQTTTransport
    private let logger: Logger
    private var state = State.awaitingConnect
    private var will: ConnectPacket.Will?
    private var timers: [Scheduled<Void>] = []
    private var needsFlush = false

    init(hub: Hub, transport: MQTTTransport, logger: Logger) {
        self.hub = hub
        self.transport = transport
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { startConnectTimer(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        startConnectTimer(context: context)
        context.fireChannelActive()
    }

    private func startConnectTimer(context: ChannelHandlerContext) {
        let channel = context.channel
        let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
        timers.append(
            context.eventLoop.scheduleTask(in: hub.connectTimeout) {
                if case .awaitingConnect = loopBoundSelf.value.state { channel.close(promise: nil) }
            })
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let packet = unwrapInboundIn(data)
        switch state {
        case .awaitingConnect:
            guard case .connect(let connect) = packet else { return close(context, "the first packet was not CONNECT") }
            handleConnect(context: context, connect)
        case .connected(let connection):
            // Fault injection: packets the network "dropped" never reach the hub.
            guard !connection.isDiscardingTraffic else { return }
            handle(packet, from: connection, context: context)
        case .provisioning(let session):
            let outcome = session.handle(packet)
            for reply in outcome.packets { context.write(wrapOutboundOut(reply), promise: nil) }
            if !outcome.packets.isEmpty { needsFlush = true }
            if let reason = outcome.closeReason {
                context.flush()
                needsFlush = false
                close(context, reason.isEmpty ? "the device disconnected from the provisioning service" : reason)
            }
        case .closed:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timers.forEach { $0.cancel() }
        timers.removeAll()
        if case .connected(let connection) = state {
            if let will, let topic = TelemetryTopic(parsing: will.topic) {
                try? hub.receiveTelemetry(
                    from: connection, topic: topic, rawProperties: Self.bag(of: will.topic), payload: will.message)
            }
            hub.detach(connection)
        }
        state = .closed
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            close(context, "no packet within 1.5 times the keep-alive")
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        close(context, "\(error)")
    }

    // MARK: CONNECT

    private func handleConnect(context: ChannelHandlerContext, _ connect: ConnectPacket) {
        guard connect.protocolName == "MQTT", connect.protocolLevel == 4 else {
            return refuse(
                context, .unacceptableProtocolVersion, "protocol \(connect.protocolName) level \(connect.protocolLevel)"
            )
        }
        hub.recordConnectAttempt()
        let certificate = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self).peerCertificate
        let credentials = ConnectCredentials(
            clientId: connect.clientId, username: connect.username, password: connect.password,
            clientCertificateDER: certificate.flatMap { try? $0.toDERBytes() })
        if hub.provisioning.isProvisioningUsername(connect.username) {
            return handleProvisioningConnect(context: context, connect, credentials: credentials)
        }
        let key: IdentityKey
        let tokenExpiry: Date?
        switch hub.authenticate(credentials) {
        case .failure(let code):
            return refuse(context, code, "client '\(connect.clientId)' refused")
        case .success(let (authenticated, expiry)):
            key = authenticated
            tokenExpiry = expiry
        }

        let parameters = connect.username.flatMap(MQTTUsername.init(parsing:))?.parameters
        let connection = hub.makeConnection(
            for: key, transport: transport, userAgent: parameters?["DeviceClientType"],
            modelId: parameters?[PlugAndPlay.modelIdParameter].flatMap { $0.isEmpty ? nil : $0 },
            channel: context.channel)
        let (sessionPresent, resend, replaced) = hub.attach(connection, cleanSession: connect.cleanSession)
        state = .connected(connection)
        will = connect.will
        replaced?.close()

        let keepAlive = min(connect.keepAliveSeconds, Self.maximumKeepAlive)
        if keepAlive > 0 {
            let timeout = TimeAmount.milliseconds(Int64(keepAlive) * 1500)
            try? context.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: timeout), position: .first)
        }
        if let tokenExpiry {
            // IoT Hub ends a connection when its SAS token expires; the client renews by reconnecting.
            let delay = max(0, tokenExpiry.timeIntervalSinceNow)
            let channel = context.channel
            timers.append(
                context.eventLoop.scheduleTask(in: .milliseconds(Int64(delay * 1000))) {
                    channel.close(promise: nil)
                })
        }
        context.write(
            wrapOutboundOut(.connack(ConnackPacket(sessionPresent: sessionPresent, returnCode: .accepted))),
            promise: nil)
        for packet in resend { context.write(wrapOutboundOut(packet), promise: nil) }
        context.flush()
        hub.deliverCloudToDevice(to: key)
    }

    /// A CONNECT whose user name names this hub's ID scope: a device of the provisioning service.
    private func handleProvisioningConnect(
        context: ChannelHandlerContext, _ connect: ConnectPacket, credentials: ConnectCredentials
    ) {
        if hub.state.withLockedValue({ $0.faults.refusesConnections(at: Date()) }) {
            return refuse(context, .serverUnavailable, "provisioning client refused by fault injection")
        }
        let identity: ProvisioningIdentity
        switch hub.provisioning.authenticate(credentials) {
        case .failure(let code):
            return refuse(context, code, "provisioning client '\(connect.clientId.prefix(128))' refused")
        case .success(let authenticated):
            identity = authenticated
        }
        state = .provisioning(ProvisioningMQTTSession(identity: identity, hub: hub))
        let keepAlive = min(connect.keepAliveSeconds, Self.maximumKeepAlive)
        if keepAlive > 0 {
            let timeout = TimeAmount.milliseconds(Int64(keepAlive) * 1500)
            try? context.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: timeout), position: .first)
        }
        if let expiry = identity.tokenExpiry {
            let channel = context.channel
            timers.append(
                context.eventLoop.scheduleTask(in: .milliseconds(Int64(max(0, expiry.timeIntervalSinceNow) * 1000))) {
                    channel.close(promise: nil)
                })
        }
        logger.info("provisioning client connected", metadata: ["registrationId": "\(identity.registrationId)"])
        context.writeAndFlush(
            wrapOutboundOut(.connack(ConnackPacket(sessionPresent: false, returnCode: .accepted))), promise: nil)
    }

    private func refuse(_ context: ChannelHandlerContext, _ code: ConnackPacket.ReturnCode, _ reason: String) {
        logger.info("connection refused", metadata: ["code": "\(code.rawValue)", "reason": "\(reason)"])
        state = .closed
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.connack(ConnackPacket(sessionPresent: false, returnCode: code))))
            .whenComplete { _ in channel.close(promise: nil) }
    }

    // MARK: After CONNECT

    private func handle(_ packet: MQTTPacket, from connection: DeviceConnection, context: ChannelHandlerContext) {
        switch packet {
        case .publish(let publish):
            handlePublish(publish, from: connection, context: context)
        case .puback(let ack):
            hub.acknowledge(connection, packetId: ack.packetId)
        case .subscribe(let subscribe):
            let codes = hub.subscribe(connection, subscribe.subscriptions)
            context.writeAndFlush(
                wrapOutboundOut(.suback(SubackPacket(packetId: subscribe.packetId, returnCodes: codes))), promise: nil)
            if subscribe.subscriptions.contains(where: { $0.topicFilter.hasSuffix("/messages/devicebound/#") }) {
                hub.deliverCloudToDevice(to: connection.key)
            }
        case .unsubscribe(let unsubscribe):
            hub.unsubscribe(connection, unsubscribe.topicFilters)
            context.writeAndFlush(
                wrapOutboundOut(.unsuback(PacketIdentifierPacket(packetId: unsubscribe.packetId))), promise: nil)
        case .pingreq:
            context.write(wrapOutboundOut(.pingresp), promise: nil)
            needsFlush = true
        case .disconnect:
            will = nil
            context.close(promise: nil)
        case .connect:
            close(context, "a second CONNECT")
        case .connack, .pubrec, .pubrel, .pubcomp, .suback, .unsuback, .pingresp:
            close(context, "a packet a client does not send, or QoS 2 (IoT Hub has no QoS 2)")
        }
    }

    private func handlePublish(
        _ publish: PublishPacket, from connection: DeviceConnection, context: ChannelHandlerContext
    ) {
        guard publish.qos != .exactlyOnce else { return close(context, "QoS 2 publish") }
        let topic = publish.topic
        if let telemetry = TelemetryTopic(parsing: topic) {
            do {
                try hub.receiveTelemetry(
                    from: connection, topic: telemetry, rawProperties: Self.bag(of: topic), payload: publish.payload,
                    redelivered: publish.duplicate)
            } catch .tooLarge(let size) {
                return close(context, "message of \(size) bytes exceeds \(Message.maximumSize)")
            } catch {
                return close(context, "telemetry for another identity on \(topic)")
            }
        } else if let request = TwinRequestTopic(parsing: topic) {
            hub.handleTwinRequest(from: connection, request, payload: publish.payload)
        } else if let response = MethodResponseTopic(parsing: topic) {
            hub.receiveMethodResponse(from: connection, response, payload: publish.payload)
        } else {
            return close(context, "publish to a topic IoT Hub does not accept: \(topic)")
        }
        guard let packetId = publish.packetId else { return }
        let ack = MQTTPacket.puback(PacketIdentifierPacket(packetId: packetId))
        if let delay = hub.acknowledgementDelay {
            let channel = context.channel
            context.eventLoop.scheduleTask(in: delay) { channel.writeAndFlush(ack, promise: nil) }
        } else {
            context.write(wrapOutboundOut(ack), promise: nil)
            needsFlush = true
        }
    }

    private func close(_ context: ChannelHandlerContext, _ reason: String) {
        if case .closed = state { return }
        logger.info("closing device connection", metadata: ["reason": "\(reason)"])
        context.close(promise: nil)
    }

    /// The property-bag segment of a telemetry topic.
    private static func bag(of topic: String) -> Substring {
        guard let range = topic.range(of: "/messages/events/") else { return "" }
        return topic[range.upperBound...]
    }
}
