import NIOCore

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
