import IoTHubProtocol

extension IoTHubDeviceClient {
    /// Throws what ``send(_:)-(Message)`` would throw before sending: the message's size
    /// (IoT Hub's limit) and its topic's length (MQTT's). The outbox checks with it before it
    /// takes a message.
    func checkSendable(_ message: Message) throws(IoTHubError) {
        try message.validateSize()
        // The topic is built only when its length could be over the limit: building it just to
        // measure it cost more than the rest of accepting a message.
        let bound = TelemetryTopic.nameLengthBound(deviceId: deviceId, moduleId: moduleId, message: message)
        guard bound > TelemetryTopic.maximumNameLength else { return }
        _ = try telemetryTopic(for: message)
    }
}
