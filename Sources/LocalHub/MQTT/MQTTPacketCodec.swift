import NIOCore

/// Decodes MQTT 3.1.1 packets from a byte stream.
///
/// The remaining length is checked against `maximumPacketSize` as soon as the fixed header is
/// read, so a peer that claims a 256 MB packet is refused before anything is buffered for it.
struct MQTTPacketDecoder: ByteToMessageDecoder {
    typealias InboundOut = MQTTPacket

    /// The largest remaining length accepted.
    let maximumPacketSize: Int
    /// Whether the next packet must be CONNECT: a server sets it so a peer that starts with
    /// anything else is refused at its first byte, not after a body it may never finish.
    private var requiresConnect: Bool

    init(maximumPacketSize: Int, requireConnectFirst: Bool = false) {
        self.maximumPacketSize = maximumPacketSize
        self.requiresConnect = requireConnectFirst
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        if requiresConnect, let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) {
            guard first == MQTTPacketType.connect.rawValue << 4 else {
                throw MQTTProtocolError.malformed(.connect, "the first packet is not CONNECT")
            }
            requiresConnect = false
        }
        guard let packet = try Self.decodePacket(from: &buffer, maximumPacketSize: maximumPacketSize) else {
            return .needMoreData
        }
        context.fireChannelRead(Self.wrapInboundOut(packet))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws
        -> DecodingState
    {
        // A partial packet at EOF is dropped with the connection.
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }

    /// Decodes one packet if `buffer` holds all of it; consumes nothing otherwise.
    static func decodePacket(from buffer: inout ByteBuffer, maximumPacketSize: Int) throws(MQTTProtocolError)
        -> MQTTPacket?
    {
        var peek = buffer
        guard let first = peek.readInteger(as: UInt8.self) else { return nil }
        guard let type = MQTTPacketType(rawValue: first >> 4) else { throw .reservedPacketType(first >> 4) }
        let flags = first & 0x0F
        guard let remainingLength = try readRemainingLength(from: &peek) else { return nil }
        guard remainingLength <= maximumPacketSize else {
            throw .packetTooLarge(claimed: remainingLength, limit: maximumPacketSize)
        }
        guard var body = peek.readSlice(length: remainingLength) else { return nil }
        buffer = peek
        return try decodeBody(type: type, flags: flags, body: &body)
    }

    /// Reads the variable-length remaining length (1 to 4 bytes); nil if incomplete.
    static func readRemainingLength(from buffer: inout ByteBuffer) throws(MQTTProtocolError) -> Int? {
        var value = 0
        var multiplier = 1
        for index in 0..<4 {
            guard let byte = buffer.readInteger(as: UInt8.self) else { return nil }
            value += Int(byte & 0x7F) * multiplier
            if byte & 0x80 == 0 {
                // The shortest encoding is required: a trailing 0x00 after a continuation is malformed.
                if index > 0, byte == 0 { throw .malformedRemainingLength }
                return value
            }
            multiplier *= 128
        }
        throw .malformedRemainingLength
    }

    private static func decodeBody(type: MQTTPacketType, flags: UInt8, body: inout ByteBuffer) throws(MQTTProtocolError)
        -> MQTTPacket
    {
        // Fixed-header flags are fixed for every type but PUBLISH.
        let requiredFlags: UInt8 = (type == .pubrel || type == .subscribe || type == .unsubscribe) ? 0x02 : 0x00
        if type != .publish, flags != requiredFlags {
            throw .invalidFixedHeaderFlags(type, flags)
        }
        let packet: MQTTPacket
        switch type {
        case .connect: packet = .connect(try ConnectPacket.decode(from: &body))
        case .connack: packet = .connack(try ConnackPacket.decode(from: &body))
        case .publish: packet = .publish(try PublishPacket.decode(flags: flags, from: &body))
        case .puback: packet = .puback(try PacketIdentifierPacket.decode(type, from: &body))
        case .pubrec: packet = .pubrec(try PacketIdentifierPacket.decode(type, from: &body))
        case .pubrel: packet = .pubrel(try PacketIdentifierPacket.decode(type, from: &body))
        case .pubcomp: packet = .pubcomp(try PacketIdentifierPacket.decode(type, from: &body))
        case .subscribe: packet = .subscribe(try SubscribePacket.decode(from: &body))
        case .suback: packet = .suback(try SubackPacket.decode(from: &body))
        case .unsubscribe: packet = .unsubscribe(try UnsubscribePacket.decode(from: &body))
        case .unsuback: packet = .unsuback(try PacketIdentifierPacket.decode(type, from: &body))
        case .pingreq, .pingresp, .disconnect:
            guard body.readableBytes == 0 else { throw .trailingBytes(type) }
            packet = type == .pingreq ? .pingreq : type == .pingresp ? .pingresp : .disconnect
        }
        return packet
    }
}

/// Encodes MQTT 3.1.1 packets.
struct MQTTPacketEncoder: MessageToByteEncoder {
    typealias OutboundIn = MQTTPacket

    func encode(data packet: MQTTPacket, out: inout ByteBuffer) {
        Self.encode(packet, into: &out)
    }

    /// Writes `packet` (fixed header included) to `out`.
    static func encode(_ packet: MQTTPacket, into out: inout ByteBuffer) {
        // Write the body after a 5-byte gap, then the fixed header right before it, so the body
        // is written once and never moved.
        let start = out.writerIndex
        let headerSpace = 5
        out.moveWriterIndex(forwardBy: 0)
        out.writeRepeatingByte(0, count: headerSpace)
        let bodyStart = out.writerIndex
        let (type, flags) = writeBody(packet, into: &out)
        let bodyLength = out.writerIndex - bodyStart

        var header: [UInt8] = [type.rawValue << 4 | flags]
        var remaining = bodyLength
        repeat {
            var byte = UInt8(remaining % 128)
            remaining /= 128
            if remaining > 0 { byte |= 0x80 }
            header.append(byte)
        } while remaining > 0
        let headerStart = bodyStart - header.count
        out.setBytes(header, at: headerStart)
        // Drop the unused part of the gap by shifting the reader past it when this packet is
        // the first in the buffer; otherwise compact it.
        if headerStart > start {
            if out.readerIndex == start {
                out.moveReaderIndex(to: headerStart)
            } else {
                let packetBytes = out.getBytes(at: headerStart, length: out.writerIndex - headerStart) ?? []
                out.moveWriterIndex(to: start)
                out.writeBytes(packetBytes)
            }
        }
    }

    private static func writeBody(_ packet: MQTTPacket, into out: inout ByteBuffer) -> (MQTTPacketType, UInt8) {
        switch packet {
        case .connect(let connect):
            connect.encode(into: &out)
            return (.connect, 0)
        case .connack(let connack):
            connack.encode(into: &out)
            return (.connack, 0)
        case .publish(let publish):
            publish.encode(into: &out)
            return (.publish, publish.flags)
        case .puback(let ack):
            ack.encode(into: &out)
            return (.puback, 0)
        case .pubrec(let ack):
            ack.encode(into: &out)
            return (.pubrec, 0)
        case .pubrel(let ack):
            ack.encode(into: &out)
            return (.pubrel, 0x02)
        case .pubcomp(let ack):
            ack.encode(into: &out)
            return (.pubcomp, 0)
        case .subscribe(let subscribe):
            subscribe.encode(into: &out)
            return (.subscribe, 0x02)
        case .suback(let suback):
            suback.encode(into: &out)
            return (.suback, 0)
        case .unsubscribe(let unsubscribe):
            unsubscribe.encode(into: &out)
            return (.unsubscribe, 0x02)
        case .unsuback(let ack):
            ack.encode(into: &out)
            return (.unsuback, 0)
        case .pingreq: return (.pingreq, 0)
        case .pingresp: return (.pingresp, 0)
        case .disconnect: return (.disconnect, 0)
        }
    }
}
