import AsyncPrimitives
import Foundation
import IoTHubProtocol
import NIOCore
import NIOFoundationCompat

extension Hub {
    /// Calls a direct method on a connected device and waits for its answer, like IoT Hub's
    /// `POST /twins/{id}/methods`.
    ///
    /// - Throws: ``ServiceError/deviceNotOnline(_:)`` when the device is not connected or has not
    ///   subscribed to method requests, or disconnects before it answers;
    ///   ``ServiceError/gatewayTimeout(_:)`` when it does not answer within `responseTimeout`.
    func invokeMethod(on key: IdentityKey, name: String, payload: Data, responseTimeout: Duration)
        async throws(ServiceError) -> MethodCallResult
    {
        let (requestId, connection, packet) = try preparedMethodRequest(to: key, name: name, payload: payload)
        defer { forgetMethodRequest(requestId) }
        connection.send([packet])
        let replies = methodReplies
        let seconds = responseTimeout.components.seconds
        return try await withTimeout(
            responseTimeout,
            timeoutError: { .gatewayTimeout("the device did not answer method '\(name)' within \(seconds) s") }
        ) { () async throws(ServiceError) -> MethodCallResult in
            try await replies.reply(to: requestId, cancelled: { .internalError("the method call was cancelled") })
        }
    }

    /// Allocates a request id, announces it to ``methodReplies`` and prepares the publish, all
    /// under the lock, so a disconnect in between fails the call at once.
    private func preparedMethodRequest(to key: IdentityKey, name: String, payload: Data) throws(ServiceError) -> (
        String, DeviceConnection, MQTTPacket
    ) {
        try state.withLock { state throws(ServiceError) -> (String, DeviceConnection, MQTTPacket) in
            guard state.identities[key] != nil else { throw .notFound(key) }
            state.lastMethodRequestId += 1
            let requestId = String(state.lastMethodRequestId, radix: 16)
            let topic = MethodRequestTopic(methodName: name, requestId: requestId).name
            guard
                let (connection, packet) = Self.preparePublish(
                    in: &state, to: key, topic: topic, payload: ByteBuffer(data: payload), kind: .transient)
            else {
                throw .deviceNotOnline(key)
            }
            state.pendingMethods[requestId] = key
            methodReplies.expect(requestId)
            return (requestId, connection, packet)
        }
    }

    private func forgetMethodRequest(_ requestId: String) {
        state.withLockedValue { _ = $0.pendingMethods.removeValue(forKey: requestId) }
    }

    /// A device answered a method request.
    func receiveMethodResponse(from connection: DeviceConnection, _ topic: MethodResponseTopic, payload: ByteBuffer) {
        let awaited = state.withLockedValue { state -> Bool in
            guard state.pendingMethods[topic.requestId] == connection.key else { return false }
            state.pendingMethods[topic.requestId] = nil
            return true
        }
        // An answer after the timeout, or to a request this device never got, is dropped like IoT Hub does.
        guard awaited else { return }
        methodReplies.complete(
            topic.requestId,
            with: .success(MethodCallResult(status: topic.status, payload: Data(payload.readableBytesView))))
    }
}

/// The device's answer to a direct method.
struct MethodCallResult: Sendable {
    var status: Int
    var payload: Data
}
