import NIOCore

/// PUBLISH: an application message, in either direction.
struct PublishPacket: Sendable, Equatable {
    var topic: String
    var payload: ByteBuffer
    var qos: MQTTQoS
    var retain: Bool = false
    var duplicate: Bool = false
    /// Present for QoS 1 and 2.
    var packetId: UInt16?

    /// The fixed-header flag nibble.
    var flags: UInt8 {
        (duplicate ? 0x08 : 0) | qos.rawValue << 1 | (retain ? 0x01 : 0)
    }

    static func decode(flags: UInt8, from buffer: inout ByteBuffer) throws(MQTTProtocolError) -> PublishPacket {
        let qosBits = (flags >> 1) & 0x03
        guard let qos = MQTTQoS(rawValue: qosBits) else { throw .invalidQoS(qosBits) }
        let duplicate = flags & 0x08 != 0
        if qos == .atMostOnce, duplicate {
            throw .malformed(.publish, "DUP set on a QoS 0 message")
        }
        let topic = try buffer.readMQTTString(in: .publish)
        guard !topic.isEmpty, !topic.contains("+"), !topic.contains("#") else {
            throw .malformed(.publish, "the topic name is empty or has a wildcard")
        }
        var packetId: UInt16?
        if qos != .atMostOnce {
            guard let id = buffer.readInteger(as: UInt16.self) else { throw .truncated(.publish) }
            guard id != 0 else { throw .malformed(.publish, "packet identifier 0") }
            packetId = id
        }
        let payload = buffer.readSlice(length: buffer.readableBytes) ?? ByteBuffer()
        return PublishPacket(
            topic: topic, payload: payload, qos: qos, retain: flags & 0x01 != 0, duplicate: duplicate,
            packetId: packetId)
    }

    func encode(into buffer: inout ByteBuffer) {
        buffer.writeMQTTString(topic.utf8)
        if let packetId { buffer.writeInteger(packetId) }
        var payload = payload
        buffer.writeBuffer(&payload)
    }
}
