import IoTHubProtocol

extension IoTHubDeviceClient {
    /// Sends every cloud-to-device message (or, for a module, every input message) to `inbox`
    /// from now on instead of ``messages()``, and subscribes to them. A message is on disk in the
    /// inbox before the client acknowledges it to the hub; when it cannot be stored, the
    /// acknowledgement is held back and the connection ended, so the hub sends it again.
    /// Give the inbox before connecting, so that nothing is acknowledged that is not kept.
    public func deliverMessages(to inbox: CloudToDeviceInbox) {
        self.inbox.withLockedValue { $0 = inbox }
        listenersChanged(.cloudToDevice, .added)
    }

    /// A message from the hub, on the network thread: into the inbox (staged until the thread's
    /// next write), else to the listeners.
    func received(_ message: Message) {
        if let inbox = inbox.withLockedValue({ $0 }) {
            inbox.stage(message)
            // Committed by the inbox it was staged in, even if another is given meanwhile.
            stagingInbox.withLockedValue { $0 = inbox }
        } else {
            messageStreams.yield(message)
        }
    }

    /// On the network thread before it writes: what the inbox staged is made durable.
    func keepReceivedMessages() -> Bool {
        let staged = stagingInbox.withLockedValue { inbox in
            defer { inbox = nil }
            return inbox
        }
        return staged?.commitStaged() ?? true
    }
}
