import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing

@testable import LocalHub

// MARK: - Helpers

/// The limit the tests decode with unless they say otherwise: 512 KiB.
private let defaultLimit = 512 * 1024

/// A packet with a name for test reports.
struct NamedPacket: Sendable, CustomTestStringConvertible {
    var name: String
    var packet: MQTTPacket

    init(_ name: String, _ packet: MQTTPacket) {
        self.name = name
        self.packet = packet
    }

    var testDescription: String { name }
}

/// Bytes and the packet they are, or the error they must be refused with.
struct ByteCase<Expected: Sendable>: Sendable, CustomTestStringConvertible {
    var name: String
    var bytes: [UInt8]
    var expected: Expected

    init(_ name: String, _ bytes: [UInt8], _ expected: Expected) {
        self.name = name
        self.bytes = bytes
        self.expected = expected
    }

    var testDescription: String { name }
}

private func encoded(_ packet: MQTTPacket) -> ByteBuffer {
    var buffer = ByteBuffer()
    MQTTPacketEncoder.encode(packet, into: &buffer)
    return buffer
}

private func encodedBytes(_ packet: MQTTPacket) -> [UInt8] {
    Array(encoded(packet).readableBytesView)
}

private func decode(_ bytes: [UInt8], maximumPacketSize: Int = defaultLimit) throws(MQTTProtocolError) -> MQTTPacket? {
    var buffer = ByteBuffer(bytes: bytes)
    return try MQTTPacketDecoder.decodePacket(from: &buffer, maximumPacketSize: maximumPacketSize)
}

private func bytes(_ string: String) -> [UInt8] { Array(string.utf8) }

/// An MQTT string: 16-bit big-endian length, then the UTF-8 bytes.
private func mqttString(_ string: String) -> [UInt8] {
    let utf8 = bytes(string)
    return [UInt8(utf8.count >> 8), UInt8(utf8.count & 0xFF)] + utf8
}

/// A deterministic generator so every run feeds the decoder the same garbage.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

// MARK: - Sample packets

enum Samples {
    static let connectMinimal = ConnectPacket(cleanSession: true, keepAliveSeconds: 60, clientId: "device-1")

    static let connectFull = ConnectPacket(
        cleanSession: true, keepAliveSeconds: 240, clientId: "d1/m1",
        will: .init(
            topic: "devices/d1/messages/events/", message: ByteBuffer(string: "gone"), qos: .atLeastOnce, retain: true),
        username: "hub.azure-devices.net/d1/m1/?api-version=2019-10-01",
        password: ByteBuffer(string: "SharedAccessSignature sr=hub.azure-devices.net%2Fdevices%2Fd1&sig=abc&se=1"))

    static let connects: [NamedPacket] = [
        NamedPacket("CONNECT minimal, clean session", .connect(connectMinimal)),
        NamedPacket(
            "CONNECT without clean session, keep-alive 0, empty client id",
            .connect(ConnectPacket(cleanSession: false, keepAliveSeconds: 0, clientId: ""))),
        NamedPacket(
            "CONNECT keep-alive 65535, unicode client id",
            .connect(ConnectPacket(cleanSession: true, keepAliveSeconds: 65535, clientId: "gerät-日本-🚀"))),
        NamedPacket(
            "CONNECT MQTT 3.1 protocol name and level",
            .connect(
                ConnectPacket(
                    protocolName: "MQIsdp", protocolLevel: 3, cleanSession: true, keepAliveSeconds: 10, clientId: "c"))),
        NamedPacket(
            "CONNECT will QoS 0",
            .connect(
                ConnectPacket(
                    cleanSession: true, keepAliveSeconds: 30, clientId: "c",
                    will: .init(topic: "w", message: ByteBuffer(string: "bye"), qos: .atMostOnce, retain: false)))),
        NamedPacket(
            "CONNECT will QoS 1 retained, not clean",
            .connect(
                ConnectPacket(
                    cleanSession: false, keepAliveSeconds: 30, clientId: "c",
                    will: .init(
                        topic: "a/b", message: ByteBuffer(bytes: [0, 1, 0xFF]), qos: .atLeastOnce, retain: true)))),
        NamedPacket(
            "CONNECT will QoS 2, empty will message",
            .connect(
                ConnectPacket(
                    cleanSession: true, keepAliveSeconds: 30, clientId: "c",
                    will: .init(topic: "a/b", message: ByteBuffer(), qos: .exactlyOnce, retain: false)))),
        NamedPacket(
            "CONNECT user name only",
            .connect(
                ConnectPacket(
                    cleanSession: true, keepAliveSeconds: 30, clientId: "c", username: "user"))),
        NamedPacket(
            "CONNECT empty user name",
            .connect(
                ConnectPacket(
                    cleanSession: true, keepAliveSeconds: 30, clientId: "c", username: ""))),
        NamedPacket(
            "CONNECT user name and binary password",
            .connect(
                ConnectPacket(
                    cleanSession: false, keepAliveSeconds: 30, clientId: "c", username: "user",
                    password: ByteBuffer(bytes: [0x00, 0xC3, 0x28, 0xFF])))),
        NamedPacket(
            "CONNECT user name and empty password",
            .connect(
                ConnectPacket(
                    cleanSession: true, keepAliveSeconds: 30, clientId: "c", username: "user", password: ByteBuffer()))),
        NamedPacket("CONNECT will, user name and password", .connect(connectFull)),
    ]

    static let returnCodes: [ConnackPacket.ReturnCode] = [
        .accepted, .unacceptableProtocolVersion, .identifierRejected, .serverUnavailable, .badUsernameOrPassword,
        .notAuthorized,
    ]

    static let connacks: [NamedPacket] = returnCodes.flatMap { code in
        [false, true].map { sessionPresent in
            NamedPacket(
                "CONNACK \(code) session present \(sessionPresent)",
                .connack(ConnackPacket(sessionPresent: sessionPresent, returnCode: code)))
        }
    }

    static let largePayload = ByteBuffer(bytes: (0..<262_144).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })

    static let publishes: [NamedPacket] = [
        NamedPacket(
            "PUBLISH QoS 0",
            .publish(
                PublishPacket(
                    topic: "devices/d1/messages/events/", payload: ByteBuffer(string: "{\"t\":21.5}"), qos: .atMostOnce)
            )),
        NamedPacket(
            "PUBLISH QoS 0 retain",
            .publish(
                PublishPacket(
                    topic: "a/b", payload: ByteBuffer(string: "x"), qos: .atMostOnce, retain: true))),
        NamedPacket(
            "PUBLISH QoS 1",
            .publish(
                PublishPacket(
                    topic: "a/b", payload: ByteBuffer(string: "hello"), qos: .atLeastOnce, packetId: 1))),
        NamedPacket(
            "PUBLISH QoS 1 dup",
            .publish(
                PublishPacket(
                    topic: "a/b", payload: ByteBuffer(string: "hello"), qos: .atLeastOnce, duplicate: true,
                    packetId: 0x1234))),
        NamedPacket(
            "PUBLISH QoS 1 dup retain",
            .publish(
                PublishPacket(
                    topic: "a/b", payload: ByteBuffer(string: "hello"), qos: .atLeastOnce, retain: true,
                    duplicate: true,
                    packetId: 65535))),
        NamedPacket(
            "PUBLISH QoS 1 retain",
            .publish(
                PublishPacket(
                    topic: "a/b", payload: ByteBuffer(string: "r"), qos: .atLeastOnce, retain: true, packetId: 9))),
        NamedPacket(
            "PUBLISH QoS 2",
            .publish(
                PublishPacket(
                    topic: "a/b", payload: ByteBuffer(string: "twice"), qos: .exactlyOnce, packetId: 7))),
        NamedPacket(
            "PUBLISH QoS 0 empty payload",
            .publish(
                PublishPacket(
                    topic: "a", payload: ByteBuffer(), qos: .atMostOnce))),
        NamedPacket(
            "PUBLISH QoS 1 empty payload",
            .publish(
                PublishPacket(
                    topic: "a", payload: ByteBuffer(), qos: .atLeastOnce, packetId: 2))),
        NamedPacket(
            "PUBLISH QoS 1 payload of 262144 bytes",
            .publish(
                PublishPacket(
                    topic: "devices/d1/messages/events/", payload: largePayload, qos: .atLeastOnce, packetId: 3))),
        NamedPacket(
            "PUBLISH QoS 0 payload of every byte value",
            .publish(
                PublishPacket(
                    topic: "bin", payload: ByteBuffer(bytes: Array(0...255)), qos: .atMostOnce))),
        NamedPacket(
            "PUBLISH unicode topic",
            .publish(
                PublishPacket(
                    topic: "capteurs/température/日本/🚀", payload: ByteBuffer(string: "ü"), qos: .atLeastOnce, packetId: 4
                ))),
        NamedPacket(
            "PUBLISH $iothub topic",
            .publish(
                PublishPacket(
                    topic: "$iothub/twin/res/200/?$rid=1&$version=2", payload: ByteBuffer(string: "{}"),
                    qos: .atMostOnce))),
        NamedPacket(
            "PUBLISH cloud-to-device topic",
            .publish(
                PublishPacket(
                    topic: "devices/d/messages/devicebound/%24.mid=1&%24.to=%2Fdevices%2Fd%2Fmessages%2Fdevicebound",
                    payload: ByteBuffer(string: "c2d"), qos: .atLeastOnce, packetId: 5))),
    ]

    static let identifierPackets: [NamedPacket] = [UInt16(1), 0x1234, 65535].flatMap { id in
        [
            NamedPacket("PUBACK \(id)", .puback(PacketIdentifierPacket(packetId: id))),
            NamedPacket("PUBREC \(id)", .pubrec(PacketIdentifierPacket(packetId: id))),
            NamedPacket("PUBREL \(id)", .pubrel(PacketIdentifierPacket(packetId: id))),
            NamedPacket("PUBCOMP \(id)", .pubcomp(PacketIdentifierPacket(packetId: id))),
            NamedPacket("UNSUBACK \(id)", .unsuback(PacketIdentifierPacket(packetId: id))),
        ]
    }

    static let subscriptions: [NamedPacket] = [
        NamedPacket(
            "SUBSCRIBE one filter",
            .subscribe(
                SubscribePacket(
                    packetId: 1,
                    subscriptions: [.init(topicFilter: "devices/d1/messages/devicebound/#", qos: .atLeastOnce)]))),
        NamedPacket(
            "SUBSCRIBE several filters",
            .subscribe(
                SubscribePacket(
                    packetId: 0xBEEF,
                    subscriptions: [
                        .init(topicFilter: "devices/d1/messages/devicebound/#", qos: .atLeastOnce),
                        .init(topicFilter: "$iothub/methods/POST/#", qos: .atMostOnce),
                        .init(topicFilter: "$iothub/twin/res/#", qos: .exactlyOnce),
                        .init(topicFilter: "+/capteurs/température/#", qos: .atMostOnce),
                        .init(topicFilter: "#", qos: .atLeastOnce),
                    ]))),
        NamedPacket(
            "SUBACK granted and refused", .suback(SubackPacket(packetId: 0xBEEF, returnCodes: [1, 0, 2, 0x80, 1]))),
        NamedPacket("SUBACK refused", .suback(SubackPacket(packetId: 1, returnCodes: [SubackPacket.failure]))),
        NamedPacket("UNSUBSCRIBE one filter", .unsubscribe(UnsubscribePacket(packetId: 2, topicFilters: ["a/b"]))),
        NamedPacket(
            "UNSUBSCRIBE several filters",
            .unsubscribe(
                UnsubscribePacket(
                    packetId: 65535,
                    topicFilters: ["devices/d1/messages/devicebound/#", "$iothub/methods/POST/#", "日本/+"]))),
    ]

    static let empties: [NamedPacket] = [
        NamedPacket("PINGREQ", .pingreq),
        NamedPacket("PINGRESP", .pingresp),
        NamedPacket("DISCONNECT", .disconnect),
    ]

    static let all: [NamedPacket] = connects + connacks + publishes + identifierPackets + subscriptions + empties

    /// Every sample but the 256 KiB PUBLISH, for tests that feed bytes one at a time.
    static let small: [NamedPacket] = all.filter { encoded($0.packet).readableBytes < 1000 }
}

// MARK: - Round trips

@Suite struct MQTTPacketRoundTripTests {
    @Test(arguments: Samples.all)
    func roundTrip(_ sample: NamedPacket) throws {
        var buffer = encoded(sample.packet)
        let decoded = try MQTTPacketDecoder.decodePacket(from: &buffer, maximumPacketSize: defaultLimit)
        #expect(decoded == sample.packet)
        #expect(buffer.readableBytes == 0, "the whole packet is consumed")
    }

    /// The fixed header of every encoding names the packet's type with the flags MQTT requires.
    @Test(arguments: Samples.all)
    func fixedHeaderTypeAndFlags(_ sample: NamedPacket) throws {
        let first = try #require(encodedBytes(sample.packet).first)
        let expected: UInt8
        switch sample.packet {
        case .connect: expected = 0x10
        case .connack: expected = 0x20
        case .publish(let publish):
            expected = 0x30 | (publish.duplicate ? 0x08 : 0) | publish.qos.rawValue << 1 | (publish.retain ? 1 : 0)
        case .puback: expected = 0x40
        case .pubrec: expected = 0x50
        case .pubrel: expected = 0x62
        case .pubcomp: expected = 0x70
        case .subscribe: expected = 0x82
        case .suback: expected = 0x90
        case .unsubscribe: expected = 0xA2
        case .unsuback: expected = 0xB0
        case .pingreq: expected = 0xC0
        case .pingresp: expected = 0xD0
        case .disconnect: expected = 0xE0
        }
        #expect(first == expected)
    }

    @Test func largePayloadUsesThreeByteRemainingLength() throws {
        let packet = MQTTPacket.publish(
            PublishPacket(
                topic: "t", payload: Samples.largePayload, qos: .atMostOnce))
        let bytes = encodedBytes(packet)
        // Remaining length 2 + 1 + 262144 = 262147 = 0x40003: 0x83 0x80 0x10.
        #expect(Array(bytes.prefix(4)) == [0x30, 0x83, 0x80, 0x10])
        #expect(bytes.count == 4 + 262_147)
        #expect(try decode(bytes) == packet)
    }

    @Test func allPacketsBackToBackInOneBuffer() throws {
        var buffer = ByteBuffer()
        for sample in Samples.all {
            MQTTPacketEncoder.encode(sample.packet, into: &buffer)
        }
        let expectedLength = Samples.all.reduce(0) { $0 + encoded($1.packet).readableBytes }
        #expect(buffer.readableBytes == expectedLength)
        for sample in Samples.all {
            let decoded = try MQTTPacketDecoder.decodePacket(from: &buffer, maximumPacketSize: defaultLimit)
            #expect(decoded == sample.packet, "\(sample.name)")
        }
        #expect(buffer.readableBytes == 0)
        #expect(try MQTTPacketDecoder.decodePacket(from: &buffer, maximumPacketSize: defaultLimit) == nil)
    }

    @Test func encodingAppendsAfterUnreadBytes() {
        var buffer = ByteBuffer(bytes: [0xAA, 0xBB, 0xCC])
        MQTTPacketEncoder.encode(.puback(PacketIdentifierPacket(packetId: 0x0102)), into: &buffer)
        #expect(Array(buffer.readableBytesView) == [0xAA, 0xBB, 0xCC, 0x40, 0x02, 0x01, 0x02])
    }

    @Test func encodingAfterReadBytes() {
        var buffer = ByteBuffer(bytes: [0xAA, 0xBB, 0xCC])
        buffer.moveReaderIndex(forwardBy: 3)
        MQTTPacketEncoder.encode(.pingresp, into: &buffer)
        #expect(Array(buffer.readableBytesView) == [0xD0, 0x00])
    }

    @Test func encodingAfterPartlyReadBytes() {
        var buffer = ByteBuffer(bytes: [0xAA, 0xBB, 0xCC])
        buffer.moveReaderIndex(forwardBy: 1)
        MQTTPacketEncoder.encode(.pingresp, into: &buffer)
        #expect(Array(buffer.readableBytesView) == [0xBB, 0xCC, 0xD0, 0x00])
    }

    /// The payload of a PUBLISH is its readable bytes, wherever its reader index is.
    @Test func publishPayloadSliceIsEncodedFromItsReaderIndex() throws {
        var payload = ByteBuffer(bytes: [9, 9, 1, 2, 3])
        payload.moveReaderIndex(forwardBy: 2)
        let packet = MQTTPacket.publish(PublishPacket(topic: "t", payload: payload, qos: .atMostOnce))
        #expect(encodedBytes(packet) == [0x30, 0x06, 0x00, 0x01, 0x74, 1, 2, 3])
        let decoded = try #require(try decode(encodedBytes(packet)))
        guard case .publish(let publish) = decoded else {
            Issue.record("decoded \(decoded)")
            return
        }
        #expect(Array(publish.payload.readableBytesView) == [1, 2, 3])
    }
}

// MARK: - Exact bytes

@Suite struct MQTTPacketExactBytesTests {
    static let cases: [ByteCase<MQTTPacket>] = [
        ByteCase("PINGREQ", [0xC0, 0x00], .pingreq),
        ByteCase("PINGRESP", [0xD0, 0x00], .pingresp),
        ByteCase("DISCONNECT", [0xE0, 0x00], .disconnect),
        ByteCase(
            "CONNACK accepted", [0x20, 0x02, 0x00, 0x00],
            .connack(ConnackPacket(sessionPresent: false, returnCode: .accepted))),
        ByteCase(
            "CONNACK session present", [0x20, 0x02, 0x01, 0x00],
            .connack(ConnackPacket(sessionPresent: true, returnCode: .accepted))),
        ByteCase(
            "CONNACK not authorized", [0x20, 0x02, 0x00, 0x05],
            .connack(ConnackPacket(sessionPresent: false, returnCode: .notAuthorized))),
        ByteCase("PUBACK", [0x40, 0x02, 0x12, 0x34], .puback(PacketIdentifierPacket(packetId: 0x1234))),
        ByteCase("PUBREC", [0x50, 0x02, 0x00, 0x0A], .pubrec(PacketIdentifierPacket(packetId: 10))),
        ByteCase("PUBREL", [0x62, 0x02, 0x00, 0x0A], .pubrel(PacketIdentifierPacket(packetId: 10))),
        ByteCase("PUBCOMP", [0x70, 0x02, 0xFF, 0xFF], .pubcomp(PacketIdentifierPacket(packetId: 65535))),
        ByteCase("UNSUBACK", [0xB0, 0x02, 0x00, 0x01], .unsuback(PacketIdentifierPacket(packetId: 1))),
        // MQTT 3.1.1 section 3.1.2.10: the variable header example (level 4, flags 0xCE, keep-alive 10).
        ByteCase(
            "CONNECT of the specification's example",
            [
                0x10, 0x1F,
                0x00, 0x04, 0x4D, 0x51, 0x54, 0x54,  // "MQTT"
                0x04,  // protocol level
                0xCE,  // user name, password, will QoS 1, will, clean session
                0x00, 0x0A,  // keep-alive 10 s
                0x00, 0x03, 0x63, 0x69, 0x64,  // client id "cid"
                0x00, 0x03, 0x77, 0x2F, 0x74,  // will topic "w/t"
                0x00, 0x03, 0x62, 0x79, 0x65,  // will message "bye"
                0x00, 0x01, 0x75,  // user name "u"
                0x00, 0x01, 0x70,
            ],  // password "p"
            .connect(
                ConnectPacket(
                    cleanSession: true, keepAliveSeconds: 10, clientId: "cid",
                    will: .init(topic: "w/t", message: ByteBuffer(string: "bye"), qos: .atLeastOnce, retain: false),
                    username: "u", password: ByteBuffer(string: "p")))),
        ByteCase(
            "CONNECT minimal",
            [0x10, 0x0D, 0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, 0x61],
            .connect(ConnectPacket(cleanSession: true, keepAliveSeconds: 60, clientId: "a"))),
        ByteCase(
            "CONNECT will QoS 2 retained, no clean session",
            [
                0x10, 0x17, 0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, 0x04, 0x34, 0x00, 0x00,
                0x00, 0x01, 0x61, 0x00, 0x03, 0x61, 0x2F, 0x62, 0x00, 0x03, 0x01, 0x02, 0x03,
            ],
            .connect(
                ConnectPacket(
                    cleanSession: false, keepAliveSeconds: 0, clientId: "a",
                    will: .init(topic: "a/b", message: ByteBuffer(bytes: [1, 2, 3]), qos: .exactlyOnce, retain: true)))),
        // Section 3.3.2.3: topic "a/b", packet identifier 10.
        ByteCase(
            "PUBLISH QoS 1 of the specification's example",
            [0x32, 0x09, 0x00, 0x03, 0x61, 0x2F, 0x62, 0x00, 0x0A, 0x68, 0x69],
            .publish(PublishPacket(topic: "a/b", payload: ByteBuffer(string: "hi"), qos: .atLeastOnce, packetId: 10))),
        ByteCase(
            "PUBLISH QoS 0 retain",
            [0x31, 0x05, 0x00, 0x03, 0x61, 0x2F, 0x62],
            .publish(PublishPacket(topic: "a/b", payload: ByteBuffer(), qos: .atMostOnce, retain: true))),
        ByteCase(
            "PUBLISH QoS 2 dup",
            [0x3C, 0x06, 0x00, 0x02, 0xC3, 0xA9, 0x00, 0x01],
            .publish(PublishPacket(topic: "é", payload: ByteBuffer(), qos: .exactlyOnce, duplicate: true, packetId: 1))),
        // Section 3.8.3.1: "a/b" QoS 1 and "c/d" QoS 2, packet identifier 10.
        ByteCase(
            "SUBSCRIBE of the specification's example",
            [0x82, 0x0E, 0x00, 0x0A, 0x00, 0x03, 0x61, 0x2F, 0x62, 0x01, 0x00, 0x03, 0x63, 0x2F, 0x64, 0x02],
            .subscribe(
                SubscribePacket(
                    packetId: 10,
                    subscriptions: [
                        .init(topicFilter: "a/b", qos: .atLeastOnce), .init(topicFilter: "c/d", qos: .exactlyOnce),
                    ]))),
        // Section 3.9.3.1: granted QoS 0, 1, 2 and a failure.
        ByteCase(
            "SUBACK of the specification's example",
            [0x90, 0x06, 0x00, 0x0A, 0x00, 0x01, 0x02, 0x80],
            .suback(SubackPacket(packetId: 10, returnCodes: [0, 1, 2, 0x80]))),
        // Section 3.10.3.1.
        ByteCase(
            "UNSUBSCRIBE of the specification's example",
            [0xA2, 0x0C, 0x00, 0x0A, 0x00, 0x03, 0x61, 0x2F, 0x62, 0x00, 0x03, 0x63, 0x2F, 0x64],
            .unsubscribe(UnsubscribePacket(packetId: 10, topicFilters: ["a/b", "c/d"]))),
    ]

    @Test(arguments: cases)
    func encodesToBytes(_ row: ByteCase<MQTTPacket>) {
        #expect(encodedBytes(row.expected) == row.bytes)
    }

    @Test(arguments: cases)
    func decodesFromBytes(_ row: ByteCase<MQTTPacket>) throws {
        var buffer = ByteBuffer(bytes: row.bytes)
        #expect(try MQTTPacketDecoder.decodePacket(from: &buffer, maximumPacketSize: defaultLimit) == row.expected)
        #expect(buffer.readableBytes == 0)
    }

    /// Table 2.4 of MQTT 3.1.1: the bounds of each remaining-length size.
    static let remainingLengths: [(Int, [UInt8])] = [
        (0, [0x00]),
        (1, [0x01]),
        (127, [0x7F]),
        (128, [0x80, 0x01]),
        (321, [0xC1, 0x02]),
        (16383, [0xFF, 0x7F]),
        (16384, [0x80, 0x80, 0x01]),
        (2_097_151, [0xFF, 0xFF, 0x7F]),
        (2_097_152, [0x80, 0x80, 0x80, 0x01]),
        (268_435_455, [0xFF, 0xFF, 0xFF, 0x7F]),
    ]

    @Test(arguments: remainingLengths)
    func readsRemainingLength(value: Int, encoding: [UInt8]) throws {
        var buffer = ByteBuffer(bytes: encoding + [0x99])
        #expect(try MQTTPacketDecoder.readRemainingLength(from: &buffer) == value)
        #expect(Array(buffer.readableBytesView) == [0x99], "reads exactly the length bytes")
    }

    @Test(arguments: remainingLengths)
    func incompleteRemainingLengthNeedsMoreData(value: Int, encoding: [UInt8]) throws {
        for count in 0..<encoding.count {
            var buffer = ByteBuffer(bytes: encoding.prefix(count))
            #expect(
                try MQTTPacketDecoder.readRemainingLength(from: &buffer) == nil, "\(count) of \(encoding.count) bytes")
        }
    }

    /// A packet whose remaining length is exactly `length`: PINGREQ for 0, else a QoS 0 PUBLISH to "t".
    private static func packet(withRemainingLength length: Int) -> MQTTPacket {
        if length == 0 { return .pingreq }
        return .publish(
            PublishPacket(
                topic: "t", payload: ByteBuffer(repeating: 0x5A, count: length - 3), qos: .atMostOnce))
    }

    /// The encoder writes the same lengths (up to 2 MiB, the 256 MiB one is checked on the decoding side).
    static let encodableLengths: [(Int, [UInt8])] = remainingLengths.filter {
        $0.0 == 0 || (3...2_097_152).contains($0.0)
    }

    @Test(arguments: encodableLengths)
    func encodesRemainingLength(value: Int, encoding: [UInt8]) throws {
        let packet = Self.packet(withRemainingLength: value)
        let bytes = encodedBytes(packet)
        #expect(bytes.count == 1 + encoding.count + value)
        #expect(Array(bytes.dropFirst().prefix(encoding.count)) == encoding)
        // A packet exactly at the limit is accepted; one byte over it is refused.
        #expect(try decode(bytes, maximumPacketSize: value) == packet)
        if value > 0 {
            #expect(throws: MQTTProtocolError.packetTooLarge(claimed: value, limit: value - 1)) {
                try decode(bytes, maximumPacketSize: value - 1)
            }
        }
    }

    @Test func largestRemainingLengthWaitsForTheBodyWhenAllowed() throws {
        var buffer = ByteBuffer(bytes: [0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x01, 0x74])
        #expect(try MQTTPacketDecoder.decodePacket(from: &buffer, maximumPacketSize: Int.max) == nil)
        #expect(buffer.readableBytes == 8, "nothing consumed")
    }
}

// MARK: - NIO integration

@Suite struct MQTTPacketChannelTests {
    @Test func verifierFeedsBytesInEveryWay() throws {
        let mediumPublish = MQTTPacket.publish(
            PublishPacket(
                topic: "devices/d1/messages/events/", payload: ByteBuffer(repeating: 0x42, count: 20_000),
                qos: .atLeastOnce, packetId: 77))
        var twoInOne = encoded(.pingreq)
        MQTTPacketEncoder.encode(.puback(PacketIdentifierPacket(packetId: 5)), into: &twoInOne)
        var pairs: [(ByteBuffer, [MQTTPacket])] = [
            (encoded(.connect(Samples.connectFull)), [.connect(Samples.connectFull)]),
            (encoded(.connect(Samples.connectMinimal)), [.connect(Samples.connectMinimal)]),
            (encoded(mediumPublish), [mediumPublish]),
            (twoInOne, [.pingreq, .puback(PacketIdentifierPacket(packetId: 5))]),
        ]
        for sample in Samples.subscriptions + Samples.empties + Samples.publishes.prefix(4) {
            pairs.append((encoded(sample.packet), [sample.packet]))
        }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) {
            MQTTPacketDecoder(maximumPacketSize: defaultLimit)
        }
    }

    private func makeChannel(maximumPacketSize: Int = defaultLimit) -> EmbeddedChannel {
        EmbeddedChannel(handlers: [
            ByteToMessageHandler(MQTTPacketDecoder(maximumPacketSize: maximumPacketSize)),
            MessageToByteHandler(MQTTPacketEncoder()),
        ])
    }

    private func readAllInbound(_ channel: EmbeddedChannel) throws -> [MQTTPacket] {
        var packets: [MQTTPacket] = []
        while let packet = try channel.readInbound(as: MQTTPacket.self) {
            packets.append(packet)
        }
        return packets
    }

    @Test func severalPacketsInOneBufferAreAllDecoded() throws {
        let channel = makeChannel()
        let packets = Samples.small.map(\.packet)
        var buffer = ByteBuffer()
        for packet in packets { MQTTPacketEncoder.encode(packet, into: &buffer) }
        try channel.writeInbound(buffer)
        #expect(try readAllInbound(channel) == packets)
        #expect(try channel.finish().isClean)
    }

    @Test func packetSplitAcrossWritesIsDecodedOnceComplete() throws {
        let packet = MQTTPacket.connect(Samples.connectFull)
        let bytes = encodedBytes(packet)
        for split in 1..<bytes.count {
            let channel = makeChannel()
            try channel.writeInbound(ByteBuffer(bytes: bytes[..<split]))
            #expect(try channel.readInbound(as: MQTTPacket.self) == nil, "split at \(split)")
            try channel.writeInbound(ByteBuffer(bytes: bytes[split...]))
            #expect(try readAllInbound(channel) == [packet], "split at \(split)")
            #expect(try channel.finish().isClean)
        }
    }

    @Test func packetsSplitAtRandomPointsAreDecodedInOrder() throws {
        var rng = SplitMix64(state: 0x5EED)
        for round in 0..<50 {
            let packets = (0..<Int.random(in: 1...12, using: &rng)).compactMap { _ in
                Samples.small.randomElement(using: &rng)?.packet
            }
            var stream = ByteBuffer()
            for packet in packets { MQTTPacketEncoder.encode(packet, into: &stream) }
            let channel = makeChannel()
            var received: [MQTTPacket] = []
            while stream.readableBytes > 0 {
                let chunkLength = Int.random(in: 1...min(stream.readableBytes, 64), using: &rng)
                let slice = stream.readSlice(length: chunkLength)
                let chunk = try #require(slice)
                try channel.writeInbound(chunk)
                received += try readAllInbound(channel)
            }
            #expect(received == packets, "round \(round)")
            #expect(try channel.finish().isClean)
        }
    }

    @Test func encoderHandlerWritesEachPacket() throws {
        let channel = makeChannel()
        for sample in Samples.small {
            try channel.writeOutbound(sample.packet)
            let written = try #require(try channel.readOutbound(as: ByteBuffer.self), "\(sample.name)")
            #expect(Array(written.readableBytesView) == encodedBytes(sample.packet), "\(sample.name)")
        }
        try channel.writeOutbound(MQTTPacket.pingresp)
        let pingresp = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(Array(pingresp.readableBytesView) == [0xD0, 0x00])
        #expect(try channel.finish().isClean)
    }

    @Test func outboundBytesDecodeBackToTheSamePackets() throws {
        let channel = makeChannel()
        for sample in Samples.all {
            try channel.writeOutbound(sample.packet)
        }
        while let bytes = try channel.readOutbound(as: ByteBuffer.self) {
            try channel.writeInbound(bytes)
        }
        #expect(try readAllInbound(channel) == Samples.all.map(\.packet))
        #expect(try channel.finish().isClean)
    }

    @Test func tooLargePacketIsRefusedFromItsFixedHeader() throws {
        let channel = makeChannel(maximumPacketSize: 512 * 1024)
        #expect(throws: MQTTProtocolError.packetTooLarge(claimed: 268_435_455, limit: 524_288)) {
            try channel.writeInbound(ByteBuffer(bytes: [0x30, 0xFF, 0xFF, 0xFF, 0x7F]))
        }
        #expect(try channel.readInbound(as: MQTTPacket.self) == nil)
        #expect(try channel.finish().isClean)
    }

    @Test func malformedPacketIsAnErrorOnTheChannel() throws {
        let channel = makeChannel()
        #expect(throws: MQTTProtocolError.invalidFixedHeaderFlags(.subscribe, 0)) {
            try channel.writeInbound(ByteBuffer(bytes: [0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x00]))
        }
        #expect(try channel.readInbound(as: MQTTPacket.self) == nil)
        #expect(try channel.finish().isClean)
    }
}

// MARK: - Malformed input

@Suite struct MQTTPacketMalformedTests {
    static let connectHeader: [UInt8] = mqttString("MQTT") + [0x04]

    static let cases: [ByteCase<MQTTProtocolError>] = [
        // Fixed header.
        ByteCase("reserved packet type 0", [0x00, 0x00], .reservedPacketType(0)),
        ByteCase("reserved packet type 0, first byte only", [0x00], .reservedPacketType(0)),
        ByteCase("reserved packet type 15", [0xF0, 0x00], .reservedPacketType(15)),
        ByteCase("reserved packet type 15 with flags", [0xFF, 0x00], .reservedPacketType(15)),
        ByteCase(
            "SUBSCRIBE with flags 0",
            [0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x00], .invalidFixedHeaderFlags(.subscribe, 0)),
        ByteCase(
            "SUBSCRIBE with flags 3",
            [0x83, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x00], .invalidFixedHeaderFlags(.subscribe, 3)),
        ByteCase(
            "UNSUBSCRIBE with flags 0",
            [0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, 0x61], .invalidFixedHeaderFlags(.unsubscribe, 0)),
        ByteCase("PUBREL with flags 0", [0x60, 0x02, 0x00, 0x01], .invalidFixedHeaderFlags(.pubrel, 0)),
        ByteCase("PUBACK with flags 2", [0x42, 0x02, 0x00, 0x01], .invalidFixedHeaderFlags(.puback, 2)),
        ByteCase(
            "CONNECT with flags 1",
            [0x11, 0x0D] + connectHeader + [0x02, 0x00, 0x3C] + mqttString("a"),
            .invalidFixedHeaderFlags(.connect, 1)),
        ByteCase("CONNACK with flags 8", [0x28, 0x02, 0x00, 0x00], .invalidFixedHeaderFlags(.connack, 8)),
        ByteCase("PINGREQ with flags 15", [0xCF, 0x00], .invalidFixedHeaderFlags(.pingreq, 15)),
        ByteCase("DISCONNECT with flags 1", [0xE1, 0x00], .invalidFixedHeaderFlags(.disconnect, 1)),
        // Remaining length.
        ByteCase("5-byte remaining length", [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], .malformedRemainingLength),
        ByteCase("4 continuation bytes", [0x30, 0x80, 0x80, 0x80, 0x80], .malformedRemainingLength),
        ByteCase("non-minimal remaining length 0x80 0x00", [0xC0, 0x80, 0x00], .malformedRemainingLength),
        ByteCase("non-minimal remaining length 0xFF 0x00", [0x30, 0xFF, 0x00], .malformedRemainingLength),
        ByteCase("non-minimal remaining length 0x80 0x80 0x00", [0x30, 0x80, 0x80, 0x00], .malformedRemainingLength),
        ByteCase(
            "non-minimal remaining length 0x81 0x80 0x80 0x00",
            [0x30, 0x81, 0x80, 0x80, 0x00], .malformedRemainingLength),
        ByteCase(
            "remaining length of 256 MB, fixed header only",
            [0x30, 0xFF, 0xFF, 0xFF, 0x7F], .packetTooLarge(claimed: 268_435_455, limit: 524_288)),
        ByteCase(
            "remaining length of 512 KiB + 1, fixed header only",
            [0x30, 0x81, 0x80, 0x20], .packetTooLarge(claimed: 524_289, limit: 524_288)),
        // CONNECT.
        ByteCase(
            "CONNECT with client id longer than the body",
            [0x10, 0x0F] + connectHeader + [0x02, 0x00, 0x3C, 0x00, 0x0A, 0x61, 0x62, 0x63],
            .truncated(.connect)),
        ByteCase("CONNECT protocol name longer than the body", [0x10, 0x03, 0x00, 0x04, 0x4D], .truncated(.connect)),
        ByteCase("CONNECT without keep-alive", [0x10, 0x08] + connectHeader + [0x02], .truncated(.connect)),
        ByteCase(
            "CONNECT without a client id", [0x10, 0x0A] + connectHeader + [0x02, 0x00, 0x3C], .truncated(.connect)),
        ByteCase(
            "CONNECT with a will but no will message",
            [0x10, 0x10] + connectHeader + [0x06, 0x00, 0x3C] + mqttString("a") + mqttString("w"),
            .truncated(.connect)),
        ByteCase(
            "CONNECT with the user name flag but no user name",
            [0x10, 0x0D] + connectHeader + [0x82, 0x00, 0x3C] + mqttString("a"), .truncated(.connect)),
        ByteCase(
            "CONNECT with the password flag but no password",
            [0x10, 0x10] + connectHeader + [0xC2, 0x00, 0x3C] + mqttString("a") + mqttString("u"),
            .truncated(.connect)),
        ByteCase(
            "CONNECT with a password but no user name",
            [0x10, 0x10] + connectHeader + [0x42, 0x00, 0x3C] + mqttString("a") + mqttString("p"),
            .malformed(.connect, "a password without a user name")),
        ByteCase(
            "CONNECT with the reserved flag set",
            [0x10, 0x0D] + connectHeader + [0x03, 0x00, 0x3C] + mqttString("a"),
            .malformed(.connect, "the reserved flag is set")),
        ByteCase(
            "CONNECT with will QoS 3",
            [0x10, 0x13] + connectHeader + [0x1E, 0x00, 0x3C] + mqttString("a") + mqttString("w") + mqttString("m"),
            .invalidQoS(3)),
        ByteCase(
            "CONNECT with will retain but no will",
            [0x10, 0x0D] + connectHeader + [0x22, 0x00, 0x3C] + mqttString("a"),
            .malformed(.connect, "will flags without a will")),
        ByteCase(
            "CONNECT with will QoS but no will",
            [0x10, 0x0D] + connectHeader + [0x0A, 0x00, 0x3C] + mqttString("a"),
            .malformed(.connect, "will flags without a will")),
        ByteCase(
            "CONNECT with trailing bytes",
            [0x10, 0x0E] + connectHeader + [0x02, 0x00, 0x3C] + mqttString("a") + [0x00],
            .trailingBytes(.connect)),
        ByteCase(
            "CONNECT with invalid UTF-8 in the client id",
            [0x10, 0x0D] + connectHeader + [0x02, 0x00, 0x3C, 0x00, 0x01, 0xFF], .invalidUTF8String),
        ByteCase(
            "CONNECT with U+0000 in the user name",
            [0x10, 0x11] + connectHeader + [0x82, 0x00, 0x3C] + mqttString("a") + [0x00, 0x02, 0x75, 0x00],
            .invalidUTF8String),
        // CONNACK.
        ByteCase("CONNACK return code 6", [0x20, 0x02, 0x00, 0x06], .malformed(.connack, "flags 0, return code 6")),
        ByteCase("CONNACK reserved flags", [0x20, 0x02, 0x02, 0x00], .malformed(.connack, "flags 2, return code 0")),
        ByteCase("CONNACK truncated", [0x20, 0x01, 0x00], .truncated(.connack)),
        ByteCase("CONNACK trailing bytes", [0x20, 0x03, 0x00, 0x00, 0x00], .trailingBytes(.connack)),
        // PUBLISH.
        ByteCase("PUBLISH with invalid UTF-8 in the topic", [0x30, 0x04, 0x00, 0x02, 0xC3, 0x28], .invalidUTF8String),
        ByteCase("PUBLISH with byte 0xFF in the topic", [0x30, 0x03, 0x00, 0x01, 0xFF], .invalidUTF8String),
        ByteCase(
            "PUBLISH with an overlong encoding in the topic", [0x30, 0x04, 0x00, 0x02, 0xC0, 0xAF], .invalidUTF8String),
        ByteCase(
            "PUBLISH with a UTF-16 surrogate in the topic",
            [0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80], .invalidUTF8String),
        ByteCase(
            "PUBLISH with a cut UTF-8 sequence in the topic", [0x30, 0x04, 0x00, 0x02, 0x61, 0xE6], .invalidUTF8String),
        ByteCase("PUBLISH with U+0000 in the topic", [0x30, 0x05, 0x00, 0x03, 0x61, 0x00, 0x62], .invalidUTF8String),
        ByteCase("PUBLISH QoS 3", [0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01], .invalidQoS(3)),
        ByteCase("PUBLISH QoS 3 with DUP and retain", [0x3F, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01], .invalidQoS(3)),
        ByteCase(
            "PUBLISH QoS 0 with DUP", [0x38, 0x03, 0x00, 0x01, 0x61],
            .malformed(.publish, "DUP set on a QoS 0 message")),
        ByteCase(
            "PUBLISH QoS 1 with packet id 0", [0x32, 0x05, 0x00, 0x01, 0x61, 0x00, 0x00],
            .malformed(.publish, "packet identifier 0")),
        ByteCase(
            "PUBLISH QoS 2 with packet id 0", [0x34, 0x05, 0x00, 0x01, 0x61, 0x00, 0x00],
            .malformed(.publish, "packet identifier 0")),
        ByteCase("PUBLISH QoS 1 without packet id", [0x32, 0x03, 0x00, 0x01, 0x61], .truncated(.publish)),
        ByteCase("PUBLISH QoS 1 with half a packet id", [0x32, 0x04, 0x00, 0x01, 0x61, 0x00], .truncated(.publish)),
        ByteCase("PUBLISH topic longer than the body", [0x30, 0x03, 0x00, 0x05, 0x61], .truncated(.publish)),
        ByteCase("PUBLISH without a topic", [0x30, 0x00], .truncated(.publish)),
        ByteCase(
            "PUBLISH with an empty topic", [0x30, 0x03, 0x00, 0x00, 0x61],
            .malformed(.publish, "the topic name is empty or has a wildcard")),
        ByteCase(
            "PUBLISH topic with +", [0x30, 0x05, 0x00, 0x03, 0x61, 0x2F, 0x2B],
            .malformed(.publish, "the topic name is empty or has a wildcard")),
        ByteCase(
            "PUBLISH topic with #", [0x30, 0x05, 0x00, 0x03, 0x61, 0x2F, 0x23],
            .malformed(.publish, "the topic name is empty or has a wildcard")),
        ByteCase(
            "PUBLISH topic #", [0x30, 0x03, 0x00, 0x01, 0x23],
            .malformed(.publish, "the topic name is empty or has a wildcard")),
        ByteCase(
            "PUBLISH topic with + inside a level", [0x32, 0x06, 0x00, 0x02, 0x61, 0x2B, 0x00, 0x01],
            .malformed(.publish, "the topic name is empty or has a wildcard")),
        // SUBSCRIBE, SUBACK, UNSUBSCRIBE.
        ByteCase("SUBSCRIBE with no filters", [0x82, 0x02, 0x00, 0x01], .malformed(.subscribe, "no topic filter")),
        ByteCase("SUBSCRIBE with options byte 0x04", [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x04], .invalidQoS(4)),
        ByteCase("SUBSCRIBE with requested QoS 3", [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x03], .invalidQoS(3)),
        ByteCase(
            "SUBSCRIBE with options byte 0x81", [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x81], .invalidQoS(0x81)),
        ByteCase(
            "SUBSCRIBE second filter with bad options",
            [0x82, 0x0A, 0x00, 0x01, 0x00, 0x01, 0x61, 0x01, 0x00, 0x01, 0x62, 0x10], .invalidQoS(0x10)),
        ByteCase(
            "SUBSCRIBE filter without options", [0x82, 0x05, 0x00, 0x01, 0x00, 0x01, 0x61], .truncated(.subscribe)),
        ByteCase("SUBSCRIBE without packet id", [0x82, 0x01, 0x00], .truncated(.subscribe)),
        ByteCase(
            "SUBSCRIBE filter longer than the body", [0x82, 0x06, 0x00, 0x01, 0x00, 0x09, 0x61, 0x00],
            .truncated(.subscribe)),
        ByteCase(
            "SUBSCRIBE filter with invalid UTF-8", [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x80, 0x00],
            .invalidUTF8String),
        ByteCase(
            "SUBSCRIBE with packet id 0", [0x82, 0x06, 0x00, 0x00, 0x00, 0x01, 0x61, 0x00],
            .malformed(.subscribe, "packet identifier 0")),
        ByteCase(
            "SUBACK with return code 3", [0x90, 0x03, 0x00, 0x01, 0x03], .malformed(.suback, "invalid return codes")),
        ByteCase("SUBACK with no return codes", [0x90, 0x02, 0x00, 0x01], .malformed(.suback, "invalid return codes")),
        ByteCase("SUBACK without packet id", [0x90, 0x00], .truncated(.suback)),
        ByteCase("UNSUBSCRIBE with no filters", [0xA2, 0x02, 0x00, 0x01], .malformed(.unsubscribe, "no topic filter")),
        ByteCase(
            "UNSUBSCRIBE filter longer than the body", [0xA2, 0x05, 0x00, 0x01, 0x00, 0x02, 0x61],
            .truncated(.unsubscribe)),
        ByteCase(
            "UNSUBSCRIBE with packet id 0", [0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, 0x61],
            .malformed(.unsubscribe, "packet identifier 0")),
        // Packets with a packet identifier only, and packets with no body.
        ByteCase("PUBACK with trailing bytes", [0x40, 0x03, 0x00, 0x01, 0x00], .trailingBytes(.puback)),
        ByteCase("PUBACK truncated", [0x40, 0x01, 0x00], .truncated(.puback)),
        ByteCase("PUBACK empty", [0x40, 0x00], .truncated(.puback)),
        ByteCase("PUBREC with trailing bytes", [0x50, 0x04, 0x00, 0x01, 0x00, 0x00], .trailingBytes(.pubrec)),
        ByteCase("PUBREL with trailing bytes", [0x62, 0x03, 0x00, 0x01, 0x00], .trailingBytes(.pubrel)),
        ByteCase("PUBCOMP truncated", [0x70, 0x01, 0x00], .truncated(.pubcomp)),
        ByteCase("UNSUBACK with trailing bytes", [0xB0, 0x03, 0x00, 0x01, 0x00], .trailingBytes(.unsuback)),
        ByteCase("PINGREQ with trailing bytes", [0xC0, 0x01, 0x00], .trailingBytes(.pingreq)),
        ByteCase("PINGRESP with trailing bytes", [0xD0, 0x02, 0x00, 0x00], .trailingBytes(.pingresp)),
        ByteCase("DISCONNECT with trailing bytes", [0xE0, 0x01, 0xE0], .trailingBytes(.disconnect)),
    ]

    @Test(arguments: cases)
    func malformedPacketThrows(_ row: ByteCase<MQTTProtocolError>) {
        #expect(throws: row.expected) {
            try decode(row.bytes, maximumPacketSize: 512 * 1024)
        }
    }

    /// The fixed header alone is enough to refuse a too-large packet: nothing of the body has
    /// to be buffered first.
    @Test func tooLargePacketIsRefusedBeforeItsBodyArrives() throws {
        var buffer = ByteBuffer(bytes: [0x30, 0xFF, 0xFF, 0xFF, 0x7F])
        #expect(throws: MQTTProtocolError.packetTooLarge(claimed: 268_435_455, limit: 512 * 1024)) {
            try MQTTPacketDecoder.decodePacket(from: &buffer, maximumPacketSize: 512 * 1024)
        }
        // With a limit that allows it, the same bytes only need more data.
        var allowed = ByteBuffer(bytes: [0x30, 0xFF, 0xFF, 0xFF, 0x7F])
        #expect(try MQTTPacketDecoder.decodePacket(from: &allowed, maximumPacketSize: 268_435_455) == nil)
        #expect(allowed.readableBytes == 5)
    }

    /// Each rule the malformed table relies on also lets the valid neighbour through, so the
    /// table's bytes are wrong only where they mean to be.
    static let validNeighbours: [ByteCase<MQTTPacket>] = [
        ByteCase(
            "SUBSCRIBE with flags 2", [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x00],
            .subscribe(SubscribePacket(packetId: 1, subscriptions: [.init(topicFilter: "a", qos: .atMostOnce)]))),
        ByteCase("PUBREL with flags 2", [0x62, 0x02, 0x00, 0x01], .pubrel(PacketIdentifierPacket(packetId: 1))),
        ByteCase(
            "CONNECT with user name and password",
            [0x10, 0x13] + connectHeader + [0xC2, 0x00, 0x3C] + mqttString("a") + mqttString("u") + mqttString("p"),
            .connect(
                ConnectPacket(
                    cleanSession: true, keepAliveSeconds: 60, clientId: "a", username: "u",
                    password: ByteBuffer(string: "p")))),
        ByteCase(
            "PUBLISH QoS 1 with DUP", [0x3A, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01],
            .publish(PublishPacket(topic: "a", payload: ByteBuffer(), qos: .atLeastOnce, duplicate: true, packetId: 1))),
        ByteCase(
            "PUBLISH with a 2-byte UTF-8 topic", [0x30, 0x04, 0x00, 0x02, 0xC3, 0xA9],
            .publish(PublishPacket(topic: "é", payload: ByteBuffer(), qos: .atMostOnce))),
        ByteCase(
            "PUBLISH topic with $ and an empty level", [0x30, 0x05, 0x00, 0x03, 0x24, 0x2F, 0x2F],
            .publish(PublishPacket(topic: "$//", payload: ByteBuffer(), qos: .atMostOnce))),
        ByteCase(
            "PUBLISH with a payload", [0x30, 0x05, 0x00, 0x01, 0x61, 0x62, 0x63],
            .publish(PublishPacket(topic: "a", payload: ByteBuffer(string: "bc"), qos: .atMostOnce))),
    ]

    @Test(arguments: validNeighbours)
    func validNeighbourDecodes(_ row: ByteCase<MQTTPacket>) throws {
        #expect(try decode(row.bytes) == row.expected)
    }

    /// Bytes after the remaining length belong to the next packet, not to this one.
    @Test func bytesAfterThePacketAreLeftForTheNextOne() throws {
        var buffer = ByteBuffer(bytes: [0xC0, 0x00, 0x40, 0x02, 0x00])
        #expect(try MQTTPacketDecoder.decodePacket(from: &buffer, maximumPacketSize: defaultLimit) == .pingreq)
        #expect(Array(buffer.readableBytesView) == [0x40, 0x02, 0x00])
        #expect(try MQTTPacketDecoder.decodePacket(from: &buffer, maximumPacketSize: defaultLimit) == nil)
        #expect(Array(buffer.readableBytesView) == [0x40, 0x02, 0x00])
    }
}

// MARK: - Random input

@Suite struct MQTTPacketRandomInputTests {
    struct Outcomes {
        var packets = 0
        var needMoreData = 0
        var errors = 0
    }

    /// Decodes `bytes` as a stream until it needs more data or throws. Every packet decoded must
    /// be exactly the bytes it consumed (the decoder accepts canonical encodings only), and
    /// "needs more data" must consume nothing.
    private static func decodeStream(_ bytes: [UInt8], limit: Int, outcomes: inout Outcomes) {
        var buffer = ByteBuffer(bytes: bytes)
        while true {
            let before = buffer
            do throws(MQTTProtocolError) {
                guard let packet = try MQTTPacketDecoder.decodePacket(from: &buffer, maximumPacketSize: limit) else {
                    #expect(buffer.readerIndex == before.readerIndex, "\(bytes)")
                    #expect(buffer == before, "\(bytes)")
                    outcomes.needMoreData += 1
                    return
                }
                let consumed = buffer.readerIndex - before.readerIndex
                #expect(consumed >= 2, "\(bytes)")
                #expect(encodedBytes(packet) == before.getBytes(at: before.readerIndex, length: consumed), "\(bytes)")
                outcomes.packets += 1
            } catch {
                outcomes.errors += 1
                return
            }
        }
    }

    @Test(arguments: [UInt64(1), 42, 0xDEAD_BEEF])
    func randomBytesNeverCrashTheDecoder(seed: UInt64) {
        var rng = SplitMix64(state: seed)
        var outcomes = Outcomes()
        for _ in 0..<3000 {
            var bytes = (0..<Int.random(in: 0...40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // Mostly keep the remaining length within the bytes so bodies are parsed too.
            if bytes.count >= 2, Int.random(in: 0..<4, using: &rng) != 0 {
                bytes[1] = UInt8.random(in: 0...UInt8(min(bytes.count - 2, 127)), using: &rng)
            }
            Self.decodeStream(bytes, limit: 256, outcomes: &outcomes)
        }
        #expect(outcomes.errors > 0)
        #expect(outcomes.needMoreData > 0)
    }

    @Test(arguments: [UInt64(7), 99, 2024])
    func mutatedPacketsNeverCrashTheDecoder(seed: UInt64) {
        var rng = SplitMix64(state: seed)
        var outcomes = Outcomes()
        let encodings = Samples.small.map { encodedBytes($0.packet) }
        for _ in 0..<3000 {
            guard var bytes = encodings.randomElement(using: &rng) else { break }
            for _ in 0..<Int.random(in: 0...3, using: &rng) {
                switch Int.random(in: 0..<5, using: &rng) {
                case 0 where !bytes.isEmpty:
                    bytes[Int.random(in: bytes.indices, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                case 1 where !bytes.isEmpty:
                    let index = Int.random(in: bytes.indices, using: &rng)
                    bytes[index] ^= 1 << UInt8.random(in: 0..<8, using: &rng)
                case 2:
                    bytes.insert(
                        UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0...bytes.count, using: &rng))
                case 3 where !bytes.isEmpty:
                    bytes.remove(at: Int.random(in: bytes.indices, using: &rng))
                default:
                    bytes += encodings.randomElement(using: &rng) ?? []
                }
            }
            Self.decodeStream(bytes, limit: 1024, outcomes: &outcomes)
        }
        #expect(outcomes.packets > 0)
        #expect(outcomes.errors > 0)
        #expect(outcomes.needMoreData > 0)
    }
}

// MARK: - Truncated input

@Suite struct MQTTPacketTruncationTests {
    static let samples: [NamedPacket] = [
        NamedPacket("CONNECT with will, user name and password", .connect(Samples.connectFull)),
        NamedPacket("CONNECT minimal", .connect(Samples.connectMinimal)),
        NamedPacket(
            "PUBLISH QoS 1, 2-byte remaining length",
            .publish(
                PublishPacket(
                    topic: "devices/d1/messages/events/", payload: ByteBuffer(repeating: 0x61, count: 300),
                    qos: .atLeastOnce, retain: true, packetId: 12))),
        NamedPacket(
            "PUBLISH QoS 0", .publish(PublishPacket(topic: "a/b", payload: ByteBuffer(string: "hi"), qos: .atMostOnce))),
        NamedPacket(
            "SUBSCRIBE",
            .subscribe(
                SubscribePacket(
                    packetId: 3,
                    subscriptions: [
                        .init(topicFilter: "a/#", qos: .atLeastOnce), .init(topicFilter: "b", qos: .atMostOnce),
                    ]))),
        NamedPacket("PUBACK", .puback(PacketIdentifierPacket(packetId: 3))),
    ]

    @Test(arguments: samples)
    func everyPrefixNeedsMoreData(_ sample: NamedPacket) throws {
        let bytes = encodedBytes(sample.packet)
        for length in 0..<bytes.count {
            var buffer = ByteBuffer(bytes: bytes.prefix(length))
            let result = try MQTTPacketDecoder.decodePacket(from: &buffer, maximumPacketSize: defaultLimit)
            #expect(result == nil, "prefix of \(length) of \(bytes.count) bytes")
            #expect(buffer.readerIndex == 0, "prefix of \(length) bytes: nothing consumed")
            #expect(buffer.readableBytes == length, "prefix of \(length) bytes: nothing consumed")
        }
        var whole = ByteBuffer(bytes: bytes)
        #expect(try MQTTPacketDecoder.decodePacket(from: &whole, maximumPacketSize: defaultLimit) == sample.packet)
    }

    /// The same with bytes already read before the packet, as in a decoder's cumulation buffer.
    @Test(arguments: samples)
    func everyPrefixAfterConsumedBytesNeedsMoreData(_ sample: NamedPacket) throws {
        let bytes = encodedBytes(sample.packet)
        for length in 0..<bytes.count {
            var buffer = ByteBuffer(bytes: [0xC0, 0x00] + bytes.prefix(length))
            #expect(try MQTTPacketDecoder.decodePacket(from: &buffer, maximumPacketSize: defaultLimit) == .pingreq)
            let readerIndex = buffer.readerIndex
            #expect(try MQTTPacketDecoder.decodePacket(from: &buffer, maximumPacketSize: defaultLimit) == nil)
            #expect(buffer.readerIndex == readerIndex)
        }
    }
}
