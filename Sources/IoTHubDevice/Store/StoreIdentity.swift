import FoundationEssentials
import IoTHubProtocol

/// Which identity a store's messages belong to, kept in the store's directory (`identity`):
/// messages accepted for one device must never be sent as another, nor one device's
/// cloud-to-device messages handed to another's application, when a state directory is reused
/// with other credentials.
enum StoreIdentity {
    /// `host/device[/module]`.
    static func name(hostName: String, deviceId: String, moduleId: String?) -> String {
        "\(hostName.lowercased())/\(deviceId)" + (moduleId.map { "/" + $0 } ?? "")
    }

    /// Records `identity` for the store in `directory`; throws a description of the conflict
    /// when the store holds messages (`holdsMessages`) recorded for another identity.
    static func claim(_ identity: String, directory: String, holdsMessages: Bool) throws(StoreIdentityConflict) {
        let path = directory + "/identity"
        let recorded = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingWhitespaceAndNewlines()
        if let recorded, recorded != identity, holdsMessages {
            throw StoreIdentityConflict(directory: directory, recorded: recorded, current: identity)
        }
        if recorded != identity {
            _ = FileManager.default.createFile(
                atPath: path, contents: Data((identity + "\n").utf8), attributes: [.posixPermissions: 0o600])
        }
    }
}

struct StoreIdentityConflict: Error, CustomStringConvertible {
    var directory: String
    var recorded: String
    var current: String

    var description: String {
        "\(directory) holds messages of \(recorded), not of \(current): use another state directory for this identity (or empty that one)"
    }
}
