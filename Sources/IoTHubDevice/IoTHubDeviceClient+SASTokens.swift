import Foundation
public import IoTHubProtocol

// MARK: SAS tokens

extension IoTHubDeviceClient {
    /// Yields 120 s before a user-supplied SAS token expires (the seed's `on_new_sastoken_required`).
    public func newSASTokenRequired() -> AsyncStream<Void> {
        tokenStreams.stream()
    }

    /// Replaces a user-supplied SAS token (the seed's `update_sastoken`) and reconnects with it
    /// if connected.
    public func updateSASToken(_ text: String) async throws(IoTHubError) {
        try checkNotShutDown()
        let token = try SASToken(parsing: text)
        try credentials.replaceToken(with: token)
        scheduleTokenSignal(for: token)
        await reauthorize()
    }

    func scheduleTokenSignal(for token: SASToken) {
        let delay = max(0, token.expiryDate.timeIntervalSinceNow - 120)
        let task = Task { [weak self] in
            try? await Task.sleep(for: .milliseconds(Int64(delay * 1000)))
            guard !Task.isCancelled, let self else { return }
            let stillCurrent: Bool
            if case .sasToken(let current) = credentials.credential { stillCurrent = current == token } else { stillCurrent = false }
            if stillCurrent { tokenStreams.yield(()) }
        }
        state.withLockedValue { state in
            state.tokenSignalTask?.cancel()
            state.tokenSignalTask = task
        }
    }
}
