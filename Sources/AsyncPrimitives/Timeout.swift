/// Runs `operation`, failing with `timeoutError()` if it has not finished within `timeout`.
///
/// The operation runs as a child task and is cancelled when the time is up; its own result wins
/// whenever it comes first. Cancelling the caller cancels the operation, whose result (often
/// its own cancellation error) is then returned.
package func withTimeout<Value: Sendable, Failure: Error>(
    _ timeout: Duration, timeoutError: @escaping @Sendable () -> Failure,
    _ operation: @escaping @Sendable () async throws(Failure) -> Value
) async throws(Failure) -> Value {
    let result: Result<Value, Failure> = await withTaskGroup(of: Result<Value, Failure>?.self) { group in
        group.addTask {
            do throws(Failure) {
                return .success(try await operation())
            } catch {
                return .failure(error)
            }
        }
        group.addTask {
            do {
                try await Task.sleep(for: timeout)
            } catch {
                // Cancelled: the caller was, so the operation's own answer is awaited instead.
                return nil
            }
            return .failure(timeoutError())
        }
        var outcome: Result<Value, Failure>?
        while outcome == nil, let next = await group.next() {
            outcome = next
        }
        group.cancelAll()
        // Both children always finish, and the operation always gives a result: not nil here.
        return outcome ?? .failure(timeoutError())
    }
    return try result.get()
}
