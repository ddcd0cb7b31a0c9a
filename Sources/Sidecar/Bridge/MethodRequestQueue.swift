import AsyncPrimitives
import FoundationEssentials
import IoTHubProtocol
import NIOConcurrencyHelpers

/// Direct-method requests waiting for HTTP pollers (`GET /methods`), and the requests handed
/// out whose answers are still possible.
///
/// IoT Hub does not tell the device how long the caller waits; the hub's longest method timeout
/// is 300 s, so a request is answerable for that long after it arrived. Later answers are
/// refused as expired (410); answers to ids never seen are unknown (404).
final class MethodRequestQueue: Sendable {
    enum ResponseError: Error, Equatable {
        case unknownRequest
        case expired
    }

    /// IoT Hub's longest direct-method timeout.
    static let answerWindow: TimeInterval = 300

    private struct State {
        var arrival: [String: Date] = [:]
        var handedOut: Set<String> = []
        var answered: Set<String> = []
    }

    private let waiting = FairQueue<MethodRequest>()
    private let state = NIOLockedValueBox(State())

    /// A request from the hub.
    func deliver(_ request: MethodRequest, now: Date = Date()) {
        state.withLockedValue { state in
            state.arrival[request.requestId] = now
            Self.forgetOld(&state, now: now)
        }
        waiting.push(request)
    }

    /// The oldest waiting request (for `name`, if given); nil if none came in `timeout`.
    func next(name: String? = nil, timeout: Duration) async -> MethodRequest? {
        let request = await waiting.pop(timeout: timeout) { request in name == nil || request.name == name }
        if let request { state.withLockedValue { _ = $0.handedOut.insert(request.requestId) } }
        return request
    }

    /// Puts back a request whose poller went away before it received it.
    func requeue(_ request: MethodRequest) {
        state.withLockedValue { _ = $0.handedOut.remove(request.requestId) }
        waiting.push(request, atFront: true)
    }

    /// Checks that `requestId` can be answered now and marks it answered.
    func claimAnswer(for requestId: String, now: Date = Date()) throws(ResponseError) {
        let outcome: ResponseError? = state.withLockedValue { state in
            // A second answer is as unknown as an id never handed out.
            guard let arrived = state.arrival[requestId], !state.answered.contains(requestId) else {
                return .unknownRequest
            }
            guard now.timeIntervalSince(arrived) <= Self.answerWindow else { return .expired }
            state.answered.insert(requestId)
            state.handedOut.remove(requestId)
            return nil
        }
        if let outcome { throw outcome }
        waiting.removeAll { $0.requestId == requestId }
    }

    /// Makes a claimed request answerable again: its answer could not be sent.
    func releaseClaim(for requestId: String) {
        state.withLockedValue { _ = $0.answered.remove(requestId) }
    }

    /// Requests waiting for a poller.
    var pending: Int { waiting.count }

    /// Ids are remembered for an hour, so a late answer reads "expired", not "unknown".
    private static func forgetOld(_ state: inout State, now: Date) {
        guard state.arrival.count > 1024 else { return }
        for (id, arrived) in state.arrival where now.timeIntervalSince(arrived) > 3600 {
            state.arrival[id] = nil
            state.answered.remove(id)
            state.handedOut.remove(id)
        }
    }
}
