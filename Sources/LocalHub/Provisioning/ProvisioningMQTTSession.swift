import Foundation
import IoTHubProtocol
import NIOCore
import NIOFoundationCompat

/// A device's MQTT connection to the provisioning service, after CONNECT: it subscribes to
/// `$dps/registrations/res/#`, publishes a registration request, then polls the operation's
/// status; each request is answered on the response topic (at QoS 0) with the request's
/// `$rid`. Used on the connection's event loop only.
final class ProvisioningMQTTSession {
    /// What the connection handler does after a packet: write these packets, then close if a
    /// reason is given.
    struct Outcome {
        var packets: [MQTTPacket] = []
        var closeReason: String?
    }

    let identity: ProvisioningIdentity
    private let hub: Hub
    private var subscribed = false

    init(identity: ProvisioningIdentity, hub: Hub) {
        self.identity = identity
        self.hub = hub
    }

    func handle(_ packet: MQTTPacket) -> Outcome {
        switch packet {
        case .subscribe(let subscribe):
            let codes = subscribe.subscriptions.map { subscription -> UInt8 in
                guard subscription.topicFilter == ProvisioningProtocol.responseFilter else {
                    return SubackPacket.failure
                }
                subscribed = true
                return min(subscription.qos, .atLeastOnce).rawValue
            }
            return Outcome(packets: [.suback(SubackPacket(packetId: subscribe.packetId, returnCodes: codes))])
        case .unsubscribe(let unsubscribe):
            if unsubscribe.topicFilters.contains(ProvisioningProtocol.responseFilter) { subscribed = false }
            return Outcome(packets: [.unsuback(PacketIdentifierPacket(packetId: unsubscribe.packetId))])
        case .publish(let publish):
            return handlePublish(publish)
        case .puback:
            return Outcome()
        case .pingreq:
            return Outcome(packets: [.pingresp])
        case .disconnect:
            return Outcome(closeReason: "")
        case .connect:
            return Outcome(closeReason: "a second CONNECT")
        case .connack, .pubrec, .pubrel, .pubcomp, .suback, .unsuback, .pingresp:
            return Outcome(closeReason: "a packet a client does not send, or QoS 2")
        }
    }

    private func handlePublish(_ publish: PublishPacket) -> Outcome {
        guard publish.qos != .exactlyOnce else { return Outcome(closeReason: "QoS 2 publish") }
        guard let request = ProvisioningProtocol.Request(topic: publish.topic) else {
            return Outcome(
                closeReason: "publish to a topic the provisioning service does not accept: \(publish.topic.prefix(200))"
            )
        }
        var outcome = Outcome()
        if let packetId = publish.packetId {
            outcome.packets.append(.puback(PacketIdentifierPacket(packetId: packetId)))
        }
        let reply: ProvisioningReply
        switch request {
        case .register:
            do {
                let body = try ProvisioningProtocol.RegistrationRequest(
                    parsing: Data(publish.payload.readableBytesView))
                reply = hub.register(identity, request: body)
            } catch {
                reply = .failure(error)
            }
        case .operationStatus(_, let operationId):
            reply = hub.provisioningOperationStatus(identity, operationId: operationId)
        }
        // Like the real service, answers go only to a device that subscribed to them.
        guard subscribed else { return outcome }
        let topic = ProvisioningProtocol.responseTopic(
            status: reply.status, requestId: request.requestId, retryAfter: reply.retryAfter)
        outcome.packets.append(
            .publish(PublishPacket(topic: topic, payload: ByteBuffer(data: reply.body.encoded()), qos: .atMostOnce)))
        return outcome
    }
}
