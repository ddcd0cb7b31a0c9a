import AsyncPrimitives
import FoundationEssentials
public import IoTHubProtocol

// MARK: Twin

extension IoTHubDeviceClient {
    /// Reads the twin (the Python SDK's `get_twin`).
    public func twin() async throws(IoTHubError) -> Twin {
        let response = try await twinRequest(.get, payload: Data(" ".utf8))
        guard response.status == 200 else { throw Self.twinError(response) }
        return try Twin(parsing: response.payload)
    }

    /// Patches the reported properties (the Python SDK's `patch_twin_reported_properties`); `null`
    /// deletes. Returns the new reported `$version`.
    @discardableResult
    public func updateReportedProperties(_ patch: [String: JSONValue]) async throws(IoTHubError) -> Int {
        let response = try await twinRequest(.patchReportedProperties, payload: JSONValue.object(patch).encoded())
        guard (200..<300).contains(response.status) else { throw Self.twinError(response) }
        guard let version = response.version else { throw .clientError("the hub did not say the new reported version") }
        return version
    }

    /// Desired-property patches, each a JSON object with `$version` (the Python SDK's
    /// `on_twin_desired_properties_patch_received`).
    ///
    /// Dropping (or cancelling) the last stream turns the feature off, as setting the Python
    /// handler to `None` does: the client unsubscribes. A listener that starts later gets the
    /// whole desired properties as one patch if their version moved since the last it saw.
    public func desiredPropertiesPatches() -> AsyncStream<JSONValue> {
        let stream = desiredStreams.stream()
        return stream
    }

    private func twinRequest(_ operation: TwinRequestTopic.Operation, payload: Data) async throws(IoTHubError)
        -> TwinReply
    {
        try checkNotShutDown()
        try await ensureConnection()
        try await ensureSubscribed([.twinResponses])
        let requestId = RequestID.make()
        // Announced before the request goes out: the answer may come before the wait.
        twinResponses.expect(requestId)
        do {
            try await publish(topic: TwinRequestTopic(operation, requestId: requestId).name, payload: payload)
        } catch {
            twinResponses.forget(requestId)
            throw error
        }
        let timeout = configuration.operationTimeout
        return try await withTimeout(
            timeout, timeoutError: { .operationTimeout("no answer from the hub within \(timeout)") }
        ) { () async throws(IoTHubError) in
            try await self.twinResponses.reply(to: requestId) { .operationCancelled("the caller stopped waiting") }
        }
    }

    private static func twinError(_ response: TwinReply) -> IoTHubError {
        .serviceError(status: response.status, message: String(decoding: response.payload, as: UTF8.self))
    }

    /// With `ensure_desired_properties`: reads the twin and delivers the desired properties as a
    /// patch if their version moved since the last one seen.
    func refreshDesiredProperties() async {
        do throws(IoTHubError) {
            let twin = try await twin()
            let deliver = lastDesiredVersion.withLockedValue { last -> Bool in
                defer { last = twin.desired.version }
                guard let last else { return false }
                return last != twin.desired.version
            }
            if deliver { desiredStreams.yield(twin.desired.json) }
        } catch {
            errorStreams.yield(error)
        }
    }
}

/// The hub's answer to a twin request.
struct TwinReply: Sendable {
    var status: Int
    var version: Int?
    var payload: Data
}
