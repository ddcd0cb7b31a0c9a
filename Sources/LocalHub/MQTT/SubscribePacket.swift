import NIOCore

/// SUBSCRIBE: topic filters with a requested QoS each.
struct SubscribePacket: Sendable, Equatable {
    struct Subscription: Sendable, Equatable {
        var topicFilter: String
        var qos: MQTTQoS
    }

    var packetId: UInt16
    var subscriptions: [Subscription]

    static func decode(from buffer: inout ByteBuffer) throws(MQTTProtocolError) -> SubscribePacket {
        guard let packetId = buffer.readInteger(as: UInt16.self) else { throw .truncated(.subscribe) }
        guard packetId != 0 else { throw .malformed(.subscribe, "packet identifier 0") }  // [MQTT-2.3.1-1]
        var subscriptions: [Subscription] = []
        while buffer.readableBytes > 0 {
            let filter = try buffer.readMQTTString(in: .subscribe)
            guard let options = buffer.readInteger(as: UInt8.self) else { throw .truncated(.subscribe) }
            guard options & 0xFC == 0, let qos = MQTTQoS(rawValue: options) else { throw .invalidQoS(options) }
            subscriptions.append(Subscription(topicFilter: filter, qos: qos))
        }
        guard !subscriptions.isEmpty else { throw .malformed(.subscribe, "no topic filter") }
        return SubscribePacket(packetId: packetId, subscriptions: subscriptions)
    }

    func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(packetId)
        for subscription in subscriptions {
            buffer.writeMQTTString(subscription.topicFilter.utf8)
            buffer.writeInteger(subscription.qos.rawValue)
        }
    }
}

/// SUBACK: one return code per requested filter: the granted QoS, or 0x80 for a refusal.
struct SubackPacket: Sendable, Equatable {
    static let failure: UInt8 = 0x80

    var packetId: UInt16
    var returnCodes: [UInt8]

    static func decode(from buffer: inout ByteBuffer) throws(MQTTProtocolError) -> SubackPacket {
        guard let packetId = buffer.readInteger(as: UInt16.self) else { throw .truncated(.suback) }
        let codes = Array(buffer.readableBytesView)
        buffer.moveReaderIndex(forwardBy: codes.count)
        guard !codes.isEmpty, codes.allSatisfy({ $0 <= 2 || $0 == failure }) else {
            throw .malformed(.suback, "invalid return codes")
        }
        return SubackPacket(packetId: packetId, returnCodes: codes)
    }

    func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(packetId)
        buffer.writeBytes(returnCodes)
    }
}

/// UNSUBSCRIBE: topic filters to drop.
struct UnsubscribePacket: Sendable, Equatable {
    var packetId: UInt16
    var topicFilters: [String]

    static func decode(from buffer: inout ByteBuffer) throws(MQTTProtocolError) -> UnsubscribePacket {
        guard let packetId = buffer.readInteger(as: UInt16.self) else { throw .truncated(.unsubscribe) }
        guard packetId != 0 else { throw .malformed(.unsubscribe, "packet identifier 0") }  // [MQTT-2.3.1-1]
        var filters: [String] = []
        while buffer.readableBytes > 0 {
            filters.append(try buffer.readMQTTString(in: .unsubscribe))
        }
        guard !filters.isEmpty else { throw .malformed(.unsubscribe, "no topic filter") }
        return UnsubscribePacket(packetId: packetId, topicFilters: filters)
    }

    func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(packetId)
        for filter in topicFilters { buffer.writeMQTTString(filter.utf8) }
    }
}
