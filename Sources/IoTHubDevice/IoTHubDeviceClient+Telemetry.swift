import FoundationEssentials
public import IoTHubProtocol

// MARK: Telemetry and cloud-to-device messages

extension IoTHubDeviceClient {
    /// Sends a telemetry message (the Python SDK's `send_message`) and returns when the hub has
    /// acknowledged it. Throws `OperationTimeout` when no acknowledgement comes within the
    /// operation timeout (the message then stays queued and may still reach the hub, e.g. after
    /// a reconnect: not known to be delivered rather than not delivered).
    public func send(_ message: Message) async throws(IoTHubError) {
        try checkNotShutDown()
        let topic = try telemetryTopic(for: message)
        try await ensureConnection()
        try await publish(topic: topic, payload: message.payload)
    }

    /// The topic to send `message` on, once it passed the checks made before anything is sent:
    /// its size (IoT Hub's limit) and its topic's length (MQTT's).
    func telemetryTopic(for message: Message) throws(IoTHubError) -> String {
        try message.validateSize()
        return try TelemetryTopic(deviceId: deviceId, moduleId: moduleId, message: message).validatedName()
    }

    /// Sends messages in their order, pipelined: all are handed to the MQTT connection one after
    /// the other, without waiting for acknowledgements in between. Returns one result per
    /// message, in order; each succeeds or fails on its own (a message over the size limit fails
    /// alone, the others are still sent).
    public func send(_ messages: [Message]) async -> [Result<Void, IoTHubError>] {
        await send(messages, handedOver: {})
    }

    /// ``send(_:)``, calling `handedOver` once the messages are queued on the connection (or
    /// failed), before their acknowledgements are awaited: messages sent after that go after
    /// these on the wire (the outbox keeps its in-flight window full this way). Messages the
    /// connection could not take while it was being made again are handed over after the
    /// reconnect, so across a reconnect that order is not kept.
    func send(_ messages: [Message], handedOver: @escaping @Sendable () -> Void) async -> [Result<Void, IoTHubError>] {
        var announced = false
        defer { if !announced { handedOver() } }
        do throws(IoTHubError) {
            try checkNotShutDown()
        } catch {
            return messages.map { _ in .failure(error) }
        }
        var results = [Result<Void, IoTHubError>?](repeating: nil, count: messages.count)
        var pending: [(index: Int, topic: String, payload: Data)] = []
        pending.reserveCapacity(messages.count)
        for (index, message) in messages.enumerated() {
            do throws(IoTHubError) {
                pending.append((index, try telemetryTopic(for: message), message.payload))
            } catch {
                results[index] = .failure(error)
            }
        }
        while !pending.isEmpty {
            do throws(IoTHubError) {
                try await ensureConnection()
                guard let mqtt = lifecycle.withLockedValue({ $0.connection }) else {
                    throw .noConnectionError("the client is not connected")
                }
                let outcomes = await mqtt.publish(
                    batch: pending.map { ($0.topic, $0.payload) }, handedOver: announced ? nil : handedOver)
                announced = true
                var refused: [(index: Int, topic: String, payload: Data)] = []
                for (entry, outcome) in zip(pending, outcomes) {
                    if case .failure(.noConnectionError) = outcome {
                        refused.append(entry)
                    } else {
                        results[entry.index] = outcome
                    }
                }
                pending = refused
                // Nothing is handed to libmosquitto while a connection is being made (renewal,
                // reconnect): the rest go, in order, over the new connection.
                if !pending.isEmpty, try await !waitUntilConnected() {
                    throw .noConnectionError("the client is not connected")
                }
            } catch {
                for entry in pending { results[entry.index] = .failure(error) }
                pending = []
            }
        }
        return results.map { $0 ?? .failure(.clientError("the message was not sent")) }
    }

    /// Sends a message to an output of this module (the Python SDK's `send_message_to_output`).
    public func send(_ message: Message, toOutput output: String) async throws(IoTHubError) {
        try checkNotShutDown()
        guard moduleId != nil else { throw .clientError("outputs belong to modules; this is a device client") }
        guard !output.isEmpty else { throw .valueError(field: "output_name", reason: "is empty") }
        var message = message
        message.outputName = output
        try await send(message)
    }

    func publish(topic: String, payload: Data) async throws(IoTHubError) {
        while true {
            guard let mqtt = lifecycle.withLockedValue({ $0.connection }) else {
                throw .noConnectionError("the client is not connected")
            }
            do {
                try await mqtt.publish(topic: topic, payload: payload)
                return
            } catch .noConnectionError(let detail) {
                // Nothing is handed to libmosquitto while a connection is being made (renewal,
                // reconnect); wait for the new connection and hand the message over then.
                guard try await waitUntilConnected() else { throw .noConnectionError(detail) }
            }
        }
    }

    /// Cloud-to-device messages, or a module's input messages (the Python SDK's
    /// `on_message_received`). Listening subscribes; each listener gets every message.
    ///
    /// Dropping (or cancelling) the last stream turns the feature off, as setting the Python
    /// handler to `None` does: the client unsubscribes, and the hub keeps cloud-to-device
    /// messages queued until someone listens again. A message the hub had already sent when
    /// the last listener went is kept for the next listener, in order.
    public func messages() -> AsyncStream<Message> {
        let stream = messageStreams.stream()
        return stream
    }
}
