import Foundation
public import IoTHubProtocol

// MARK: Direct methods

extension IoTHubDeviceClient {
    /// Direct-method requests (the Python SDK's `on_method_request_received`).
    public func methodRequests() -> AsyncStream<MethodRequest> {
        let stream = methodStreams.stream()
        enableInBackground(.methods)
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
