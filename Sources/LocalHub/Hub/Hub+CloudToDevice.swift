import AsyncPrimitives
import Foundation
import IoTHubProtocol
import NIOCore
import NIOFoundationCompat

extension Hub {
    /// IoT Hub's cloud-to-device queue depth per device.
    static let cloudToDeviceQueueLimit = 50
    /// IoT Hub's default time to live of a cloud-to-device message.
    static let cloudToDeviceDefaultTimeToLive: TimeInterval = 3600

    /// Queues a cloud-to-device message for a device and delivers it if the device is listening.
    /// - Returns: the message id and lock token.
    func enqueueCloudToDevice(to deviceId: String, message: Message, timeToLive: TimeInterval?, now: Date = Date())
        throws(ServiceError) -> (messageId: String, lockToken: String)
    {
        let key = IdentityKey(deviceId: deviceId)
        let result = try state.withLock { state throws(ServiceError) -> (String, String) in
            guard var record = state.identities[key] else { throw .notFound(key) }
            record.cloudToDevice.removeAll { $0.expiryTime <= now }
            guard record.cloudToDevice.count < Self.cloudToDeviceQueueLimit else {
                throw .queueFull(
                    "the device already has \(Self.cloudToDeviceQueueLimit) cloud-to-device messages queued")
            }
            var message = message
            let messageId = message.messageId ?? UUID().uuidString.lowercased()
            message.messageId = messageId
            message.to = record.cloudToDeviceAddress
            let lockToken = UUID().uuidString.lowercased()
            let ttl = min(max(timeToLive ?? Self.cloudToDeviceDefaultTimeToLive, 1), 48 * 3600)
            record.cloudToDevice.append(
                QueuedCloudToDeviceMessage(
                    lockToken: lockToken, payload: message.payload,
                    properties: message.cloudToDevicePropertyBag.entries.map(StoredProperty.init),
                    enqueuedTime: now, expiryTime: now.addingTimeInterval(ttl), deliveryCount: 0))
            state.identities[key] = record
            return (messageId, lockToken)
        }
        stateChanged()
        deliverCloudToDevice(to: key)
        return result
    }

    /// Sends every queued, not yet in-flight message to the device if it is connected and
    /// subscribed. Called after enqueueing, after SUBSCRIBE, and after a reconnect.
    /// Messages go out in queue order: the enqueueing thread and the event loop (after a
    /// SUBSCRIBE or an acknowledgement) may both deliver, so packets are queued on the connection
    /// while the lock that handed them out is held.
    func deliverCloudToDevice(to key: IdentityKey, now: Date = Date()) {
        state.withLockedValue { state in
            guard let session = state.sessions[key], let connection = session.connection,
                var record = state.identities[key], !record.cloudToDevice.isEmpty
            else { return }
            let inflightTokens: Set<String> = Set(
                session.inflight.compactMap { item in
                    if case .cloudToDevice(let token) = item.message.kind { return token }
                    return nil
                })
            record.cloudToDevice.removeAll { $0.expiryTime <= now }
            var packets: [MQTTPacket] = []
            for index in record.cloudToDevice.indices
            where !inflightTokens.contains(record.cloudToDevice[index].lockToken) {
                let queued = record.cloudToDevice[index]
                let topic = CloudToDeviceTopic(
                    deviceId: key.deviceId, properties: PropertyBag(queued.properties.map(\.entry))
                ).name
                guard
                    let (_, packet) = Self.preparePublish(
                        in: &state, to: key, topic: topic, payload: ByteBuffer(data: queued.payload),
                        kind: .cloudToDevice(lockToken: queued.lockToken))
                else { break }
                record.cloudToDevice[index].deliveryCount += 1
                packets.append(packet)
            }
            state.identities[key] = record
            connection.sendInOrder(packets)
        }
    }

    /// Sends a message to a module input (no queue: the module must be listening).
    func sendToModuleInput(_ key: IdentityKey, input: String, message: Message) throws(ServiceError) -> String {
        let (messageId, outgoing) = try state.withLock {
            state throws(ServiceError) -> (String, (DeviceConnection, MQTTPacket)?) in
            guard state.identities[key] != nil else { throw .notFound(key) }
            var message = message
            let messageId = message.messageId ?? UUID().uuidString.lowercased()
            message.messageId = messageId
            let topic = ModuleInputTopic(
                deviceId: key.deviceId, moduleId: key.moduleId ?? "", inputName: input,
                properties: message.cloudToDevicePropertyBag
            ).name
            return (
                messageId,
                Self.preparePublish(
                    in: &state, to: key, topic: topic, payload: ByteBuffer(data: message.payload), kind: .transient)
            )
        }
        guard let (connection, packet) = outgoing else { throw .deviceNotOnline(key) }
        connection.send([packet])
        return messageId
    }

    /// Removes every queued cloud-to-device message of a device; returns how many there were.
    func purgeCloudToDevice(of deviceId: String) throws(ServiceError) -> Int {
        let key = IdentityKey(deviceId: deviceId)
        let count = try state.withLock { state throws(ServiceError) -> Int in
            guard var record = state.identities[key] else { throw .notFound(key) }
            let count = record.cloudToDevice.count
            record.cloudToDevice.removeAll()
            state.identities[key] = record
            return count
        }
        stateChanged()
        return count
    }
}
