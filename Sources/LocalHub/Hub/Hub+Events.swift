import Foundation

extension Hub {
    /// The event sources routed to the built-in endpoint besides telemetry, which always is.
    var routedEventSources: Set<MessageSource> {
        state.withLockedValue { $0.routedEventSources }
    }

    /// Routes exactly these event sources to the built-in endpoint (telemetry stays routed),
    /// like adding or removing IoT Hub routes from each source to the `events` endpoint.
    /// Events of a source not routed when they happen are not kept, as in IoT Hub.
    func setRoutedEventSources(_ sources: Set<MessageSource>) {
        state.withLockedValue { $0.routedEventSources = sources.subtracting([.telemetry]) }
        stateChanged()
    }

    /// The name IoT Hub gives itself in events (`hubName`, `user-id`): the first label of the
    /// host name.
    var hubName: String {
        String(hostName.split(separator: ".", maxSplits: 1).first ?? Substring(hostName))
    }

    /// Records the event on the built-in endpoint if its source is routed there (the event is
    /// only made then). Called with the lock held, so events are logged in the order of the
    /// changes they report (the event log's own lock is taken inside the hub's, never the other
    /// way round).
    func route(_ source: MessageSource, in state: State, _ event: () -> HubEvent) {
        guard state.routedEventSources.contains(source) else { return }
        let record = event().record(hubName: hubName)
        telemetry.append(
            record,
            size: TelemetryRecord.memoryFootprint(
                bodyBytes: record.message.size, propertyBytes: record.rawProperties.utf8.count))
    }

    /// Records a connection-state event with the next sequence number, if such events are
    /// routed. Called with the lock held.
    func routeConnectionState(of key: IdentityKey, connected: Bool, at time: Date, in state: inout State) {
        guard state.routedEventSources.contains(.deviceConnectionStateEvents) else { return }
        let sequenceNumber = nextConnectionStateSequenceNumber(in: &state)
        route(.deviceConnectionStateEvents, in: state) {
            .connectionState(key, connected: connected, sequenceNumber: sequenceNumber, at: time)
        }
    }

    /// The next connection-state sequence number: 64 hexadecimal digits that grow with every
    /// connection-state event, also across restarts of the hub (its start time comes first),
    /// so comparing them as strings orders the events, as in IoT Hub.
    func nextConnectionStateSequenceNumber(in state: inout State) -> String {
        state.lastConnectionStateSequence += 1
        let digits = String(state.lastConnectionStateSequence, radix: 16, uppercase: true)
        return String(repeating: "0", count: 16) + startTimeDigits + String(repeating: "0", count: 32 - digits.count)
            + digits
    }

    /// The hub's start as a Windows file time (100 ns since 1601), in 16 hexadecimal digits.
    static func fileTimeDigits(_ date: Date) -> String {
        let ticks = UInt64(max(0, (date.timeIntervalSince1970 + 11_644_473_600) * 10_000_000))
        let digits = String(ticks, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
    }
}
