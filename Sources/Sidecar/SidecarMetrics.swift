import NIOConcurrencyHelpers

/// The sidecar's counters and gauges, rendered in the Prometheus text format 0.0.4
/// (`GET /metrics`). A handful of series updated under one short lock: cheaper than a metrics
/// framework and enough for what the sidecar exports.
final class SidecarMetrics: Sendable {
    /// A metric family: its name, type and help text.
    struct Family: Hashable, Sendable {
        var name: String
        var type: String
        var help: String

        // A family is its name (names are unique): a counter update, once per request, hashes
        // the short name and not the help text.
        static func == (lhs: Family, rhs: Family) -> Bool { lhs.name == rhs.name }
        func hash(into hasher: inout Hasher) { hasher.combine(name) }

        static let httpRequests = Family(
            name: "iothub_sidecar_http_requests_total", type: "counter",
            help: "HTTP requests answered, by method, route and status.")
        static let connected = Family(
            name: "iothub_sidecar_connected", type: "gauge", help: "1 while connected to the hub, else 0.")
        static let stateChanges = Family(
            name: "iothub_sidecar_connection_state_changes_total", type: "counter",
            help: "Changes of connection state, by state.")
        static let reconnects = Family(
            name: "iothub_sidecar_reconnects_total", type: "counter",
            help:
                "Reconnections: times the client was connected again after losing the connection or renewing its credentials."
        )
        static let reconnectAttempts = Family(
            name: "iothub_sidecar_reconnect_attempts_total", type: "counter",
            help:
                "Connection attempts made while reconnecting, failed ones included (one reconnection takes one or more)."
        )
        static let messagesSent = Family(
            name: "iothub_sidecar_messages_sent_total", type: "counter",
            help: "Telemetry messages the hub acknowledged.")
        static let sendFailures = Family(
            name: "iothub_sidecar_message_send_failures_total", type: "counter",
            help: "Telemetry messages that failed, by code.")
        static let messagesReceived = Family(
            name: "iothub_sidecar_messages_received_total", type: "counter", help: "Cloud-to-device messages received.")
        static let inboxMessages = Family(
            name: "iothub_sidecar_inbox_messages", type: "gauge", help: "Messages in the inbox, locked or not.")
        static let inboxDropped = Family(
            name: "iothub_sidecar_inbox_dropped_total", type: "counter",
            help: "Inbox messages dropped because the inbox was full (nobody polled).")
        static let methodRequests = Family(
            name: "iothub_sidecar_method_requests_total", type: "counter", help: "Direct-method requests received.")
        static let pendingMethodRequests = Family(
            name: "iothub_sidecar_method_requests_pending", type: "gauge",
            help: "Direct-method requests waiting for a poller.")
        static let desiredPatches = Family(
            name: "iothub_sidecar_desired_patches_total", type: "counter", help: "Desired-property patches received.")
        static let backgroundErrors = Family(
            name: "iothub_sidecar_background_errors_total", type: "counter", help: "Background errors, by code.")
        static let outboxAccepted = Family(
            name: "iothub_sidecar_outbox_accepted_total", type: "counter",
            help: "Telemetry messages stored in the outbox (answered 202).")
        static let outboxMessages = Family(
            name: "iothub_sidecar_outbox_messages", type: "gauge",
            help: "Messages in the outbox, waiting or on their way to the hub.")
        static let outboxBytes = Family(
            name: "iothub_sidecar_outbox_bytes", type: "gauge", help: "Bytes the outbox's messages take on disk.")
        static let outboxMaximumBytes = Family(
            name: "iothub_sidecar_outbox_max_bytes", type: "gauge",
            help: "The outbox's limit in bytes (--outbox-max-bytes).")
        static let outboxOldestAge = Family(
            name: "iothub_sidecar_outbox_oldest_age_seconds", type: "gauge",
            help: "Seconds the oldest message in the outbox has waited; 0 when it is empty.")
        static let outboxFull = Family(
            name: "iothub_sidecar_outbox_full", type: "gauge", help: "1 while the outbox is full, else 0.")
        static let outboxDelivered = Family(
            name: "iothub_sidecar_outbox_delivered_total", type: "counter",
            help: "Outbox messages the hub acknowledged since the sidecar started.")
        static let outboxExpired = Family(
            name: "iothub_sidecar_outbox_expired_total", type: "counter",
            help: "Outbox messages dropped unsent because their time to live ran out.")
        static let outboxDropped = Family(
            name: "iothub_sidecar_outbox_dropped_total", type: "counter",
            help: "Outbox messages dropped to make room (--outbox-when-full drop-oldest).")
        static let outboxRejected = Family(
            name: "iothub_sidecar_outbox_rejected_total", type: "counter",
            help: "Requests refused because the outbox or its disk was full (507).")
        static let outboxQuarantinedSpans = Family(
            name: "iothub_sidecar_outbox_quarantined_spans", type: "gauge",
            help: "Unreadable spans of the outbox's files moved to quarantine when it was opened.")
        static let outboxTruncatedBytes = Family(
            name: "iothub_sidecar_outbox_truncated_bytes", type: "gauge",
            help: "Bytes of a torn write cut off the outbox's files when it was opened.")

        /// The order families are rendered in.
        static let all: [Family] = [
            .httpRequests, .connected, .stateChanges, .reconnects, .reconnectAttempts, .messagesSent, .sendFailures,
            .messagesReceived, .inboxMessages, .inboxDropped,
            .methodRequests, .pendingMethodRequests, .desiredPatches, .backgroundErrors, .outboxAccepted,
            .outboxMessages, .outboxBytes,
            .outboxMaximumBytes, .outboxOldestAge, .outboxFull, .outboxDelivered, .outboxExpired, .outboxDropped,
            .outboxRejected,
            .outboxQuarantinedSpans, .outboxTruncatedBytes,
        ]
    }

    /// One time series: the family and its label pairs as given. Escaping and joining wait
    /// for a scrape, so an update (once per request) only hashes a few short strings.
    private struct Series: Hashable {
        var family: Family
        var labels: [LabelPair]
    }

    private struct LabelPair: Hashable {
        var name: String
        var value: String
    }

    /// One series of ``Family/httpRequests``, counted once per request: kept apart from the
    /// other series so that counting hashes three short values and allocates nothing
    /// (docs/PERFORMANCE.md, "Work per request").
    private struct RequestSeries: Hashable {
        var method: String
        var route: String
        var status: Int
    }

    private struct Values {
        var series: [Series: Double] = [:]
        var requests: [RequestSeries: Int] = [:]
    }

    private let values = NIOLockedValueBox(Values())

    /// Adds `amount` to a counter.
    func increment(_ family: Family, labels: [(String, String)] = [], by amount: Double = 1) {
        let series = Series(family: family, labels: labels.map { LabelPair(name: $0.0, value: $0.1) })
        values.withLockedValue { $0.series[series, default: 0] += amount }
    }

    /// Counts an answered request in ``Family/httpRequests``.
    func countRequest(method: String, route: String, status: Int) {
        let series = RequestSeries(method: method, route: route, status: status)
        values.withLockedValue { $0.requests[series, default: 0] += 1 }
    }

    /// Sets a gauge.
    func set(_ family: Family, to value: Double, labels: [(String, String)] = []) {
        let series = Series(family: family, labels: labels.map { LabelPair(name: $0.0, value: $0.1) })
        values.withLockedValue { $0.series[series] = value }
    }

    /// The exposition text; `gauges` are read now (queue depths) and added for this scrape.
    func exposition() -> String {
        let stored = values.withLockedValue { $0 }
        var snapshot = stored.series
        for (request, count) in stored.requests {
            let labels = [
                LabelPair(name: "method", value: request.method), LabelPair(name: "route", value: request.route),
                LabelPair(name: "status", value: String(request.status)),
            ]
            snapshot[Series(family: .httpRequests, labels: labels), default: 0] += Double(count)
        }
        var text = ""
        for family in Family.all {
            text += "# HELP \(family.name) \(family.help)\n# TYPE \(family.name) \(family.type)\n"
            let series = snapshot.filter { $0.key.family == family }.map {
                (labels: Self.render($0.key.labels), value: $0.value)
            }
            .sorted { $0.labels < $1.labels }
            if series.isEmpty, family.type == "gauge" || family.labels.isEmpty {
                text += "\(family.name) 0\n"
            }
            for (labels, value) in series {
                text += "\(family.name)\(labels.isEmpty ? "" : "{\(labels)}") \(Self.format(value))\n"
            }
        }
        return text
    }

    private static func render(_ labels: [LabelPair]) -> String {
        labels.map { pair in
            var escaped = ""
            for character in pair.value {
                switch character {
                case "\\": escaped += "\\\\"
                case "\"": escaped += "\\\""
                case "\n": escaped += "\\n"
                default: escaped.append(character)
                }
            }
            return "\(pair.name)=\"\(escaped)\""
        }.joined(separator: ",")
    }

    private static func format(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }
}

extension SidecarMetrics.Family {
    /// Whether the family is split by labels (then it has no series until the first one).
    var labels: [String] {
        switch self {
        case .httpRequests: ["method", "route", "status"]
        case .stateChanges: ["state"]
        case .sendFailures, .backgroundErrors: ["code"]
        default: []
        }
    }
}
