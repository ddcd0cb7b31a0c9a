import NIOCore

/// CONNECT: the first packet a client sends.
struct ConnectPacket: Sendable, Equatable {
    struct Will: Sendable, Equatable {
        var topic: String
        var message: ByteBuffer
        var qos: MQTTQoS
        var retain: Bool
    }

    var protocolName: String = "MQTT"
    var protocolLevel: UInt8 = 4
    var cleanSession: Bool
    var keepAliveSeconds: UInt16
    var clientId: String
    var will: Will?
    var username: String?
    var password: ByteBuffer?

    static func decode(from buffer: inout ByteBuffer) throws(MQTTProtocolError) -> ConnectPacket {
        let protocolName = try buffer.readMQTTString(in: .connect)
        guard let level = buffer.readInteger(as: UInt8.self),
            let flags = buffer.readInteger(as: UInt8.self),
            let keepAlive = buffer.readInteger(as: UInt16.self)
        else { throw .truncated(.connect) }
        guard flags & 0x01 == 0 else { throw .malformed(.connect, "the reserved flag is set") }
        let hasUsername = flags & 0x80 != 0
        let hasPassword = flags & 0x40 != 0
        let willRetain = flags & 0x20 != 0
        let willQoSBits = (flags >> 3) & 0x03
        let hasWill = flags & 0x04 != 0
        guard let willQoS = MQTTQoS(rawValue: willQoSBits) else { throw .invalidQoS(willQoSBits) }
        if !hasWill, willQoSBits != 0 || willRetain {
            throw .malformed(.connect, "will flags without a will")
        }
        if hasPassword, !hasUsername {
            throw .malformed(.connect, "a password without a user name")
        }
        let clientId = try buffer.readMQTTString(in: .connect)
        var will: Will?
        if hasWill {
            let topic = try buffer.readMQTTString(in: .connect)
            guard let message = buffer.readMQTTBinary() else { throw .truncated(.connect) }
            will = Will(topic: topic, message: ByteBuffer(message), qos: willQoS, retain: willRetain)
        }
        let username = hasUsername ? try buffer.readMQTTString(in: .connect) : nil
        var password: ByteBuffer?
        if hasPassword {
            guard let bytes = buffer.readMQTTBinary() else { throw .truncated(.connect) }
            password = ByteBuffer(bytes)
        }
        guard buffer.readableBytes == 0 else { throw .trailingBytes(.connect) }
        return ConnectPacket(
            protocolName: protocolName, protocolLevel: level, cleanSession: flags & 0x02 != 0,
            keepAliveSeconds: keepAlive, clientId: clientId, will: will, username: username,
            password: password)
    }

    func encode(into buffer: inout ByteBuffer) {
        buffer.writeMQTTString(protocolName.utf8)
        buffer.writeInteger(protocolLevel)
        var flags: UInt8 = cleanSession ? 0x02 : 0
        if let will {
            flags |= 0x04 | will.qos.rawValue << 3 | (will.retain ? 0x20 : 0)
        }
        if password != nil { flags |= 0x40 }
        if username != nil { flags |= 0x80 }
        buffer.writeInteger(flags)
        buffer.writeInteger(keepAliveSeconds)
        buffer.writeMQTTString(clientId.utf8)
        if let will {
            buffer.writeMQTTString(will.topic.utf8)
            buffer.writeMQTTString(will.message.readableBytesView)
        }
        if let username { buffer.writeMQTTString(username.utf8) }
        if let password { buffer.writeMQTTString(password.readableBytesView) }
    }
}

/// CONNACK: the server's answer to CONNECT.
struct ConnackPacket: Sendable, Equatable {
    /// The CONNACK return codes of MQTT 3.1.1, which IoT Hub uses as they are.
    enum ReturnCode: UInt8, Sendable, Error {
        case accepted = 0
        case unacceptableProtocolVersion = 1
        case identifierRejected = 2
        case serverUnavailable = 3
        case badUsernameOrPassword = 4
        case notAuthorized = 5
    }

    var sessionPresent: Bool
    var returnCode: ReturnCode

    static func decode(from buffer: inout ByteBuffer) throws(MQTTProtocolError) -> ConnackPacket {
        guard let flags = buffer.readInteger(as: UInt8.self), let code = buffer.readInteger(as: UInt8.self) else {
            throw .truncated(.connack)
        }
        guard buffer.readableBytes == 0 else { throw .trailingBytes(.connack) }
        guard flags & 0xFE == 0, let returnCode = ReturnCode(rawValue: code) else {
            throw .malformed(.connack, "flags \(flags), return code \(code)")
        }
        return ConnackPacket(sessionPresent: flags & 0x01 != 0, returnCode: returnCode)
    }

    func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(sessionPresent ? 1 : 0))
        buffer.writeInteger(returnCode.rawValue)
    }
}
