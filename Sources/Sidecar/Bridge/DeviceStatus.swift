import FoundationEssentials
import IoTHubDevice
import IoTHubProtocol

/// Who the sidecar is and how its connection is (`GET /status`, `GET /readyz`).
struct DeviceStatus: Sendable {
    var hostName: String
    var deviceId: String
    var moduleId: String?
    var gatewayHostName: String?
    /// How the identity authenticates.
    var authentication: CredentialKind
    var state: ConnectionState
    var since: Date
    var lastError: IoTHubError?
    var tokenExpiry: Date?
    /// A SAS token given to the sidecar expires within 120 s and no new one came.
    var isNewSASTokenRequired: Bool
    /// `mqtt` or `mqtt-websockets`.
    var transport: String
    /// The proxy, described without its password.
    var proxy: String?
    /// The IoT Plug and Play model id announced when connecting (`--model-id`, or a `dtmi:`
    /// product info).
    var modelId: String? = nil
}
