import NIOCore

/// How a device's MQTT connection arrived.
enum MQTTTransport: String, Sendable {
    /// MQTT over TLS on the MQTT port.
    case tcp = "mqtt"
    /// MQTT over WebSockets at `/$iothub/websocket` on the HTTPS port.
    case webSocket = "mqtt-websockets"
}

/// A live MQTT connection of a device or module, as the hub state refers to it. Sending is
/// thread-safe: NIO channels accept writes from any thread and run them on their event loop
/// in order.
final class DeviceConnection: Sendable {
    let id: UInt64
    let key: IdentityKey
    let transport: MQTTTransport
    let channel: any Channel

    init(id: UInt64, key: IdentityKey, transport: MQTTTransport, channel: any Channel) {
        self.id = id
        self.key = key
        self.transport = transport
        self.channel = channel
    }

    /// Writes the packets and flushes once.
    func send(_ packets: [MQTTPacket]) {
        guard !packets.isEmpty else { return }
        for packet in packets {
            channel.write(packet, promise: nil)
        }
        channel.flush()
    }

    func close() {
        channel.close(promise: nil)
    }
}

/// What a hub-to-device QoS 1 publish was, so its PUBACK can be acted on.
enum OutboundKind: Sendable, Equatable {
    /// A cloud-to-device message: the PUBACK completes it (removes it from the queue).
    case cloudToDevice(lockToken: String)
    /// Anything else (twin responses, desired patches, method requests): not kept across
    /// connections.
    case transient
}

/// A hub-to-device publish awaiting its PUBACK.
struct InflightPublish: Sendable {
    var publish: PublishPacket
    var kind: OutboundKind
}

/// The MQTT session of one client id. It outlives connections when `clean_session` is false.
struct SessionState: Sendable {
    var connection: DeviceConnection?
    var cleanSession: Bool
    /// Hub-to-device publishes awaiting PUBACK, by packet id, in sending order.
    var inflight: [(packetId: UInt16, message: InflightPublish)] = []
    var lastPacketId: UInt16 = 0

    init(cleanSession: Bool) {
        self.cleanSession = cleanSession
    }

    /// The next packet id not in use (1…65535).
    mutating func allocatePacketId() -> UInt16 {
        repeat {
            lastPacketId = lastPacketId == .max ? 1 : lastPacketId + 1
        } while inflight.contains { $0.packetId == lastPacketId }
        return lastPacketId
    }
}
