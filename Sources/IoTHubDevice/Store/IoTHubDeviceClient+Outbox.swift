import IoTHubProtocol

extension IoTHubDeviceClient {
    /// Throws what ``send(_:)-(Message)`` would throw before sending: the message's size
    /// (IoT Hub's limit) and its topic's length (MQTT's). The outbox checks with it before it
    /// takes a message.
    func checkSendable(_ message: Message) throws(IoTHubError) {
        _ = try telemetryTopic(for: message)
    }
}
