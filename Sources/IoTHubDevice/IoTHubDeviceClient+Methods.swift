import FoundationEssentials
public import IoTHubProtocol

// MARK: Direct methods

extension IoTHubDeviceClient {
    /// Direct-method requests (the Python SDK's `on_method_request_received`). Listening
    /// subscribes; each listener gets every request.
    ///
    /// Dropping (or cancelling) the last stream turns the feature off, as setting the Python
    /// handler to `None` does: the client unsubscribes, and the hub answers method calls at once
    /// with 404 (`DeviceNotOnline`) instead of waiting for their timeout. A request the hub had
    /// already sent when the last listener went is kept for the next listener.
    public func methodRequests() -> AsyncStream<MethodRequest> {
        let stream = methodStreams.stream()
        return stream
    }

    /// Answers a method request (the Python SDK's `send_method_response`).
    public func respond(_ response: MethodResponse) async throws(IoTHubError) {
        try checkNotShutDown()
        if !response.payload.isEmpty { _ = try JSONValue(parsing: response.payload) }
        try await ensureConnection()
        try await publish(
            topic: response.topic.name, payload: response.payload.isEmpty ? Data("null".utf8) : response.payload)
    }
}
