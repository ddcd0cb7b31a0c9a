import FoundationEssentials
import HTTPTypes
import Hummingbird
import NIOConcurrencyHelpers

/// The one long-poll sequence of `GET /inbox`, `GET /twin/desired` and `GET /methods`: get the
/// source ready, wait up to the timeout (ending early when the caller's connection closes or
/// the sidecar shuts down), and answer 204 with nothing or 200 with what came. Whatever the wait
/// took goes back to its source when it cannot be answered: the caller left while it waited,
/// the server was cancelling the request, or the answer could not be written.
enum LongPoll {
    /// - Parameters:
    ///   - timeout: seconds to wait, already checked.
    ///   - render: the answer's headers and body for what came (`Connection: close` is added).
    static func respond<Value: Sendable>(
        to request: Request, timeout: Int, from source: LongPollSource<Value>,
        render: (Value) -> (headers: HTTPFields, body: Data)
    ) async throws -> Response {
        try await source.prepare()
        guard let value = try await wait(request, timeout: timeout, source) else { return .noContent(closing: true) }
        let rendered = render(value)
        var headers = rendered.headers
        headers[.connection] = "close"
        return Response(
            status: .ok, headers: headers, body: .data(rendered.body, ifNotWritten: { source.giveBack(value) }))
    }

    /// Waits, cancelled when the caller's connection closes.
    private static func wait<Value: Sendable>(_ request: Request, timeout: Int, _ source: LongPollSource<Value>)
        async throws -> Value?
    {
        let taken = SharedSlot<Value>()
        do {
            let value = try await request.body.consumeWithCancellationOnInboundClose { _ in
                let value = await source.wait(.seconds(timeout))
                if let value { taken.set(value) }
                return value
            }
            if let value, Task.isCancelled {
                // Taken while the server was cancelling this request: it cannot be answered.
                source.giveBack(value)
                return nil
            }
            return value
        } catch {
            // The caller went away: what the wait took was never answered.
            if let value = taken.take() { source.giveBack(value) }
            throw error
        }
    }
}

/// A value one task leaves for another: what a long-poll took, so that it can be given back if
/// the poll is cancelled; the error a request body failed with.
final class SharedSlot<T: Sendable>: Sendable {
    private let value = NIOLockedValueBox<T?>(nil)

    func set(_ newValue: T) { value.withLockedValue { $0 = newValue } }

    func take() -> T? {
        value.withLockedValue { value in
            defer { value = nil }
            return value
        }
    }
}
