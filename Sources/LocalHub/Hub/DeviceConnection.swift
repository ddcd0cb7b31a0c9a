import NIOConcurrencyHelpers
import NIOCore

/// How a device's MQTT connection arrived.
enum MQTTTransport: String, Sendable {
    /// MQTT over TLS on the MQTT port.
    case tcp = "mqtt"
    /// MQTT over WebSockets at `/$iothub/websocket` on the HTTPS port.
    case webSocket = "mqtt-websockets"
}

/// A live MQTT connection of a device or module, as the hub state refers to it. Sending is
/// thread-safe: NIO channels accept writes from any thread and queue them on their event loop;
/// a write made on that loop itself goes out at once, ahead of what other threads queued
/// (``sendInOrder(_:)`` queues behind them).
final class DeviceConnection: Sendable {
    let id: UInt64
    let key: IdentityKey
    let transport: MQTTTransport
    /// The `DeviceClientType` of the CONNECT's user name: the device SDK's user agent (with
    /// the application's `product_info`), as IoT Hub records it.
    let userAgent: String?
    /// The IoT Plug and Play model id of the CONNECT's user name (`model-id=`), if any.
    let modelId: String?
    let channel: any Channel
    private let discarding = NIOLockedValueBox(false)

    init(
        id: UInt64, key: IdentityKey, transport: MQTTTransport, userAgent: String? = nil, modelId: String? = nil,
        channel: any Channel
    ) {
        self.id = id
        self.key = key
        self.transport = transport
        self.userAgent = userAgent
        self.modelId = modelId
        self.channel = channel
    }

    /// Whether everything on this connection is discarded (``discardTraffic()``).
    var isDiscardingTraffic: Bool {
        discarding.withLockedValue { $0 }
    }

    /// From now on the hub discards every packet the client sends on this connection and
    /// sends it nothing, without closing it: as if the network dropped the packets. The client
    /// notices only when its keep-alive goes unanswered (fault injection).
    func discardTraffic() {
        discarding.withLockedValue { $0 = true }
    }

    /// Queues the packets behind everything already queued on the channel's event loop, also
    /// when called on that loop: called in the hub's lock, the packets go out in the order the
    /// lock handed them out, whichever thread sent them.
    func sendInOrder(_ packets: [MQTTPacket]) {
        guard !packets.isEmpty else { return }
        channel.eventLoop.execute { self.send(packets) }
    }

    /// Writes the packets and flushes once (nothing, when traffic is discarded).
    func send(_ packets: [MQTTPacket]) {
        guard !packets.isEmpty, !isDiscardingTraffic else { return }
        for packet in packets {
            channel.write(packet, promise: nil)
        }
        channel.flush()
    }

    func close() {
        channel.close(promise: nil)
    }
}
