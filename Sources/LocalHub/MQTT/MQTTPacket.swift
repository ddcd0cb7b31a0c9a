import NIOCore

/// An MQTT 3.1.1 control packet, as LocalHub receives and sends them. Each kind is its own
/// type (one file each) with a decoder for its variable header and payload and an encoder.
enum MQTTPacket: Sendable, Equatable {
    case connect(ConnectPacket)
    case connack(ConnackPacket)
    case publish(PublishPacket)
    case puback(PacketIdentifierPacket)
    case pubrec(PacketIdentifierPacket)
    case pubrel(PacketIdentifierPacket)
    case pubcomp(PacketIdentifierPacket)
    case subscribe(SubscribePacket)
    case suback(SubackPacket)
    case unsubscribe(UnsubscribePacket)
    case unsuback(PacketIdentifierPacket)
    case pingreq
    case pingresp
    case disconnect
}

/// The control packet type, the high nibble of the first byte.
enum MQTTPacketType: UInt8, Sendable {
    case connect = 1
    case connack, publish, puback, pubrec, pubrel, pubcomp, subscribe, suback,
        unsubscribe, unsuback, pingreq, pingresp, disconnect
}

/// Why bytes could not be decoded as MQTT 3.1.1. Every case closes the connection, as the
/// specification asks for malformed packets.
enum MQTTProtocolError: Error, Equatable, Sendable {
    case reservedPacketType(UInt8)
    case invalidFixedHeaderFlags(MQTTPacketType, UInt8)
    case malformedRemainingLength
    case packetTooLarge(claimed: Int, limit: Int)
    case truncated(MQTTPacketType)
    case trailingBytes(MQTTPacketType)
    case invalidUTF8String
    case invalidQoS(UInt8)
    case malformed(MQTTPacketType, String)
}

/// The QoS levels of MQTT.
enum MQTTQoS: UInt8, Sendable, Comparable {
    case atMostOnce = 0
    case atLeastOnce = 1
    case exactlyOnce = 2

    static func < (lhs: MQTTQoS, rhs: MQTTQoS) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP and UNSUBACK: a packet identifier and nothing else.
struct PacketIdentifierPacket: Sendable, Equatable {
    var packetId: UInt16

    init(packetId: UInt16) {
        self.packetId = packetId
    }

    static func decode(_ type: MQTTPacketType, from buffer: inout ByteBuffer) throws(MQTTProtocolError) -> Self {
        guard let packetId = buffer.readInteger(as: UInt16.self) else { throw .truncated(type) }
        guard buffer.readableBytes == 0 else { throw .trailingBytes(type) }
        return Self(packetId: packetId)
    }

    func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(packetId)
    }
}

extension ByteBuffer {
    /// Reads an MQTT UTF-8 string: a 16-bit length and that many bytes of UTF-8.
    mutating func readMQTTString(in type: MQTTPacketType) throws(MQTTProtocolError) -> String {
        guard let bytes = readMQTTBinary() else { throw .truncated(type) }
        guard let string = String(validatingUTF8Bytes: bytes) else { throw .invalidUTF8String }
        return string
    }

    /// Reads MQTT binary data: a 16-bit length and that many bytes.
    mutating func readMQTTBinary() -> ByteBufferView? {
        let save = readerIndex
        guard let length = readInteger(as: UInt16.self), let slice = readSlice(length: Int(length)) else {
            moveReaderIndex(to: save)
            return nil
        }
        return slice.readableBytesView
    }

    /// Writes an MQTT UTF-8 string or binary field (16-bit length prefix).
    @discardableResult
    mutating func writeMQTTString(_ string: some Collection<UInt8>) -> Int {
        writeInteger(UInt16(truncatingIfNeeded: string.count)) + writeBytes(string)
    }
}

extension String {
    /// Decodes UTF-8, rejecting invalid sequences and U+0000 as MQTT requires.
    init?(validatingUTF8Bytes bytes: ByteBufferView) {
        guard !bytes.contains(0), let string = String(validating: bytes, as: UTF8.self) else { return nil }
        self = string
    }
}
