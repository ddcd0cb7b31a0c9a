import Foundation

/// The key of a device or module identity: its MQTT client id, `deviceId` or `deviceId/moduleId`.
struct IdentityKey: Hashable, Sendable, Codable, CustomStringConvertible {
    var deviceId: String
    var moduleId: String?

    init(deviceId: String, moduleId: String? = nil) {
        self.deviceId = deviceId
        self.moduleId = moduleId
    }

    /// Parses an MQTT client id.
    init?(clientId: String) {
        let parts = clientId.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), parts.allSatisfy({ !$0.isEmpty }) else { return nil }
        self.init(deviceId: String(parts[0]), moduleId: parts.count == 2 ? String(parts[1]) : nil)
    }

    var clientId: String { moduleId.map { "\(deviceId)/\($0)" } ?? deviceId }
    var description: String { clientId }
}
