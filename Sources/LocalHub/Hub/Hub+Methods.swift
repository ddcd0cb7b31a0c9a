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
    ///   subscribed to method requests; ``ServiceError/gatewayTimeout(_:)`` when it does not answer
    ///   within `responseTimeout`.
    func invokeMethod(on key: IdentityKey, name: String, payload: Data, responseTimeout: TimeAmount, eventLoop: any EventLoop) async throws(ServiceError) -> MethodCallResult {
        let promise = eventLoop.makePromise(of: MethodCallResult.self)
        let prepared: (String, DeviceConnection, MQTTPacket)
        do {
            prepared = try preparedMethodRequest(to: key, name: name, payload: payload, promise: promise)
        } catch {
            promise.fail(error)
            throw error
        }
        let (requestId, connection, packet) = prepared
        let timeout = eventLoop.scheduleTask(in: responseTimeout) { [self] in
            if let call = state.withLockedValue({ $0.pendingMethods.removeValue(forKey: requestId) }) {
                call.promise.fail(ServiceError.gatewayTimeout("the device did not answer method '\(name)' within \(responseTimeout.nanoseconds / 1_000_000_000) s"))
            }
        }
        connection.send([packet])
        do {
            let result = try await promise.futureResult.get()
            timeout.cancel()
            return result
        } catch let error as ServiceError {
            throw error
        } catch {
            throw .internalError("\(error)")
        }
    }

    private func preparedMethodRequest(to key: IdentityKey, name: String, payload: Data, promise: EventLoopPromise<MethodCallResult>) throws(ServiceError) -> (String, DeviceConnection, MQTTPacket) {
        try state.withLock { state throws(ServiceError) -> (String, DeviceConnection, MQTTPacket) in
            guard state.identities[key] != nil else { throw .notFound(key) }
            state.lastMethodRequestId += 1
            let requestId = String(state.lastMethodRequestId, radix: 16)
            let topic = MethodRequestTopic(methodName: name, requestId: requestId).name
            guard let (connection, packet) = Self.preparePublish(in: &state, to: key, topic: topic, payload: ByteBuffer(data: payload), kind: .transient) else {
                throw .deviceNotOnline(key)
            }
            state.pendingMethods[requestId] = PendingMethodCall(key: key, promise: promise)
            return (requestId, connection, packet)
        }
    }

    /// A device answered a method request.
    func receiveMethodResponse(from connection: DeviceConnection, _ topic: MethodResponseTopic, payload: ByteBuffer) {
        let call = state.withLockedValue { state -> PendingMethodCall? in
            guard let call = state.pendingMethods[topic.requestId], call.key == connection.key else { return nil }
            return state.pendingMethods.removeValue(forKey: topic.requestId)
        }
        // An answer after the timeout, or to a request this device never got, is dropped like IoT Hub does.
        call?.promise.succeed(MethodCallResult(status: topic.status, payload: Data(payload.readableBytesView)))
    }
}
