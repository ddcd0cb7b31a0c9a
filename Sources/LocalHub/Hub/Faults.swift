import Foundation

/// Faults the emulator can be told to inject (`/local/faults`), for testing how clients cope.
struct Faults: Sendable, Codable, Equatable {
    /// New connections are refused (CONNACK 3, server unavailable) until this time.
    var refuseConnectionsUntil: Date?
    /// The next this-many device operations (twin requests, file-upload calls) are answered 429.
    var throttleNextOperations: Int = 0
    /// PUBACKs for telemetry are sent this many milliseconds late.
    var acknowledgementDelayMilliseconds: Int = 0

    /// Consumes one throttled operation if any are left.
    mutating func takeThrottle() -> Bool {
        guard throttleNextOperations > 0 else { return false }
        throttleNextOperations -= 1
        return true
    }

    func refusesConnections(at now: Date) -> Bool {
        guard let until = refuseConnectionsUntil else { return false }
        return now < until
    }
}
