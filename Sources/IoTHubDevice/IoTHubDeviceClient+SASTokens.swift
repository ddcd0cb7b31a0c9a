public import IoTHubProtocol

// MARK: SAS tokens

extension IoTHubDeviceClient {
    /// Yields 120 s before a user-supplied SAS token expires (the Python SDK's `on_new_sastoken_required`).
    public func newSASTokenRequired() -> AsyncStream<Void> {
        tokenStreams.stream()
    }

    /// Replaces a user-supplied SAS token (the Python SDK's `update_sastoken`) and reconnects with it
    /// if connected.
    public func updateSASToken(_ text: String) async throws(IoTHubError) {
        try checkNotShutDown()
        let token = try SASToken(parsing: text)
        try credentials.replaceToken(with: token)
        changeLifecycle { $0.newTokenSupplied(expiringAt: token.expiryDate, at: .now) }
        background.start()
        await renewCredentials()
    }
}
