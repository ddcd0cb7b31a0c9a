import Foundation
import IoTHubProtocol
import NIOCore

extension Hub {
    /// Why a telemetry publish was not accepted; the connection is then closed, as IoT Hub does.
    enum TelemetryRefusal: Error {
        case foreignIdentity
        case tooLarge(size: Int)
    }

    /// Records a telemetry message from `connection`. The topic's identity must be the connection's.
    func receiveTelemetry(
        from connection: DeviceConnection, topic: TelemetryTopic, rawProperties: Substring, payload: ByteBuffer,
        redelivered: Bool = false,
        now: Date = Date()
    ) throws(TelemetryRefusal) {
        guard topic.deviceId == connection.key.deviceId, topic.moduleId == connection.key.moduleId else {
            throw .foreignIdentity
        }
        var message = Message(payload: Data(payload.readableBytesView), propertyBag: topic.properties)
        guard message.size <= Message.maximumSize else { throw .tooLarge(size: message.size) }
        let componentName = message.properties.removeValue(forKey: PlugAndPlay.componentNameProperty)
        telemetry.append(
            TelemetryRecord(
                enqueuedTime: now, deviceId: topic.deviceId, moduleId: topic.moduleId, message: message,
                rawProperties: String(rawProperties),
                redelivered: redelivered, componentName: componentName, modelId: connection.modelId),
            size: TelemetryRecord.memoryFootprint(
                bodyBytes: payload.readableBytes, propertyBytes: rawProperties.utf8.count))
    }
}
