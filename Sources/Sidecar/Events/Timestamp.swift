import FoundationEssentials

/// RFC 3339 UTC timestamps, whole seconds (`2025-01-31T12:00:00Z`).
enum Timestamp {
    static func string(_ date: Date) -> String {
        date.formatted(.iso8601)
    }
}
