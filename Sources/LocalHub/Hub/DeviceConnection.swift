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
