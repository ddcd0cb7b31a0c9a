import AsyncPrimitives
import FoundationEssentials
public import IoTHubProtocol
import NIOConcurrencyHelpers

// MARK: The deprecated blocking receives

/// What the deprecated blocking receives wait on: one queue per kind, fed from the client's
/// streams from the first call on, so that nothing arriving between two calls is lost (the
/// Python SDK's inboxes).
final class BlockingReceives: Sendable {
    enum Kind: Hashable { case messages, methodRequests, desiredPatches }

    let messages = FairQueue<Message>()
    let methodRequests = FairQueue<MethodRequest>()
    let desiredPatches = FairQueue<JSONValue>()
    /// Method names a caller asked for by name: their requests go to such callers only, as
    /// the Python SDK gives each name asked for an inbox of its own.
    let namedMethods = NIOLockedValueBox<Set<String>>([])
    private let started = NIOLockedValueBox<Set<Kind>>([])

    /// True the first time it is asked for `kind`: the caller then starts its feed.
    func startsFeed(_ kind: Kind) -> Bool {
        started.withLockedValue { $0.insert(kind).inserted }
    }
}

extension IoTHubDeviceClient {
    /// Waits up to `timeout` for the next cloud-to-device message (a module: the next input
    /// message); nil when none came in time (`Duration.zero`: only one already received). The
    /// Python SDK's deprecated `receive_message(block:timeout:)`.
    ///
    /// The first call subscribes, as ``messages()`` does; from then on every message is kept
    /// for the next call. Messages go to a durable inbox instead when one is given
    /// (``deliverMessages(to:)``).
    @available(
        *, deprecated,
        message:
            "Deprecated as in the Python SDK (receive_message): use messages(), which delivers each message as it arrives."
    )
    public func receiveMessage(timeout: Duration) async throws(IoTHubError) -> Message? {
        try checkNotShutDown()
        let queue = blockingReceives.messages
        if blockingReceives.startsFeed(.messages) {
            let stream = messages()
            background.run { for await message in stream { queue.push(message) } }
        }
        return await queue.pop(timeout: timeout)
    }

    /// Waits up to `timeout` for the next direct-method request, for the method `name` only
    /// when it is given; nil when none came in time. The Python SDK's deprecated
    /// `receive_method_request(method_name:block:timeout:)`: once a name has been asked for,
    /// its requests go only to callers that name it.
    ///
    /// The first call subscribes, as ``methodRequests()`` does. Answer with ``respond(_:)``.
    @available(
        *, deprecated,
        message:
            "Deprecated as in the Python SDK (receive_method_request): use methodRequests(), which delivers each request as it arrives."
    )
    public func receiveMethodRequest(name: String? = nil, timeout: Duration) async throws(IoTHubError) -> MethodRequest?
    {
        try checkNotShutDown()
        let receives = blockingReceives
        if let name { receives.namedMethods.withLockedValue { _ = $0.insert(name) } }
        if receives.startsFeed(.methodRequests) {
            let stream = methodRequests()
            background.run { for await request in stream { receives.methodRequests.push(request) } }
        }
        let named = receives.namedMethods
        return await receives.methodRequests.pop(timeout: timeout) { request in
            if let name { return request.name == name }
            return !named.withLockedValue { $0.contains(request.name) }
        }
    }

    /// Waits up to `timeout` for the next desired-properties patch (a JSON object with
    /// `$version`); nil when none came in time. The Python SDK's deprecated
    /// `receive_twin_desired_properties_patch(block:timeout:)`.
    ///
    /// The first call subscribes, as ``desiredPropertiesPatches()`` does.
    @available(
        *, deprecated,
        message:
            "Deprecated as in the Python SDK (receive_twin_desired_properties_patch): use desiredPropertiesPatches(), which delivers each patch as it arrives."
    )
    public func receiveTwinDesiredPropertiesPatch(timeout: Duration) async throws(IoTHubError) -> JSONValue? {
        try checkNotShutDown()
        let queue = blockingReceives.desiredPatches
        if blockingReceives.startsFeed(.desiredPatches) {
            let stream = desiredPropertiesPatches()
            background.run { for await patch in stream { queue.push(patch) } }
        }
        return await queue.pop(timeout: timeout)
    }
}
