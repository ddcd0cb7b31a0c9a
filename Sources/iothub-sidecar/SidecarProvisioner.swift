import FoundationEssentials
import Glibc
import IoTHubDevice
import IoTHubProtocol
import Logging
import NIOConcurrencyHelpers
import Sidecar

/// What `serve` needs to provision itself through the Device Provisioning Service.
struct ProvisioningSettings {
    var idScope: String
    var registrationId: String
    var host: String
    /// The device's own key (given, or derived from the group key) or its certificate.
    var credential: DeviceCredential
    /// The custom payload sent with each registration (`--dps-payload-file`).
    var payload: JSONValue?

    /// A provisioning client for these settings; validates them.
    func client(configuration: DeviceClientConfiguration) throws(IoTHubError) -> ProvisioningDeviceClient {
        switch credential {
        case .x509(let x509):
            return try ProvisioningDeviceClient.fromX509Certificate(
                provisioningHost: host, registrationId: registrationId, idScope: idScope, x509: x509,
                configuration: configuration)
        case .symmetricKey(let key):
            return try ProvisioningDeviceClient.fromSymmetricKey(
                provisioningHost: host, registrationId: registrationId, idScope: idScope, symmetricKey: key,
                configuration: configuration)
        case .sasToken, .edgeWorkload:
            throw .valueError(
                field: "credential", reason: "DPS takes a key or a certificate, not a SAS token or an IoT Edge module")
        }
    }
}

/// The sidecar's DPS registration: at start it uses the assignment cached in the state
/// directory (`provisioning.json`, mode 0600, valid only for the same DPS host, ID scope and
/// registration id), or registers and caches the result; it registers again on demand and when
/// the hub refuses the identity.
final class SidecarProvisioner: ProvisioningController {
    /// The cache file's content.
    private struct Cache: Codable {
        var provisioningHost: String
        var idScope: String
        var registrationId: String
        var registeredAt: Date
        var result: RegistrationResult
    }

    private let settings: ProvisioningSettings
    private let client: ProvisioningDeviceClient
    private let cachePath: String
    private let logger: Logger
    private let state: NIOLockedValueBox<ProvisioningReport>
    /// The hub and device id the device client was made for (nil: it was made without an
    /// assignment and is never connected).
    private let clientIdentity = NIOLockedValueBox<(hub: String, deviceId: String)?>(nil)

    init(
        settings: ProvisioningSettings, configuration: DeviceClientConfiguration, stateDirectory: String, logger: Logger
    ) throws(IoTHubError) {
        self.settings = settings
        self.client = try settings.client(configuration: configuration)
        self.cachePath = stateDirectory + "/provisioning.json"
        self.logger = logger
        self.state = NIOLockedValueBox(
            ProvisioningReport(idScope: settings.idScope, registrationId: settings.registrationId))
    }

    var report: ProvisioningReport {
        state.withLockedValue { $0 }
    }

    /// Takes the cached assignment, or registers (a failure is kept in the report, not thrown:
    /// the sidecar serves it on `/status` and `/readyz`).
    func start() async {
        if let cache = readCache() {
            state.withLockedValue { report in
                report.result = cache.result
                report.registeredAt = cache.registeredAt
                report.source = "cache"
            }
            logger.info(
                "using the DPS assignment cached in the state directory",
                metadata: [
                    "hub": "\(cache.result.assignedHub ?? "")", "device": "\(cache.result.deviceId ?? "")",
                    "registeredAt": "\(cache.registeredAt)",
                ])
            return
        }
        _ = try? await reprovision()
    }

    func reprovision() async throws(IoTHubError) -> ProvisioningReport {
        do throws(IoTHubError) {
            let result = try await client.register(payload: settings.payload)
            guard result.assignedHub?.isEmpty == false, result.deviceId?.isEmpty == false else {
                throw .clientError("DPS assigned no hub or no device id")
            }
            let now = Date()
            writeCache(
                Cache(
                    provisioningHost: settings.host, idScope: settings.idScope, registrationId: settings.registrationId,
                    registeredAt: now, result: result))
            let usable = isUsable(result)
            let moved = IoTHubError.clientError(
                "DPS assigned the device to \(result.assignedHub ?? "")/\(result.deviceId ?? ""), not the hub and device id this sidecar was started with: restart the sidecar to use the new assignment"
            )
            if !usable { logger.error("the device was assigned elsewhere", metadata: ["error": "\(moved)"]) }
            return state.withLockedValue { report in
                report.result = result
                report.registeredAt = now
                report.source = "dps"
                report.lastError = usable ? nil : moved
                return report
            }
        } catch {
            logger.error("registration with DPS failed", metadata: ["error": "\(error)"])
            state.withLockedValue { $0.lastError = error }
            throw error
        }
    }

    func identityRefused(_ error: IoTHubError) async -> Bool {
        guard clientIdentity.withLockedValue({ $0 }) != nil, let after = try? await reprovision().result else {
            return false
        }
        return isUsable(after)
    }

    /// Whether the running device client is for this assignment (the same hub and device id).
    private func isUsable(_ result: RegistrationResult) -> Bool {
        guard let identity = clientIdentity.withLockedValue({ $0 }) else { return false }
        return identity.hub.lowercased() == result.assignedHub?.lowercased() && identity.deviceId == result.deviceId
    }

    /// The device client for the assignment; without one, a client that names the
    /// registration at the DPS host and is never connected (the bridge does not connect a
    /// device that has no assignment).
    func makeDeviceClient(configuration: DeviceClientConfiguration) throws(IoTHubError) -> IoTHubDeviceClient {
        guard let result = report.result, let hub = result.assignedHub, let deviceId = result.deviceId else {
            var idle = configuration
            idle.autoConnect = false
            return try IoTHubDeviceClient(
                hostName: settings.host, deviceId: settings.registrationId, credential: client.deviceCredential,
                configuration: idle,
                logger: Logger(label: "iothub-device"))
        }
        clientIdentity.withLockedValue { $0 = (hub, deviceId) }
        return try IoTHubDeviceClient(
            hostName: hub, deviceId: deviceId, credential: client.deviceCredential, configuration: configuration,
            logger: Logger(label: "iothub-device"))
    }

    private func readCache() -> Cache? {
        guard let data = FileManager.default.contents(atPath: cachePath) else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        guard let cache = try? decoder.decode(Cache.self, from: data) else {
            logger.warning("ignoring an unreadable DPS cache", metadata: ["path": "\(cachePath)"])
            return nil
        }
        guard cache.provisioningHost.lowercased() == settings.host.lowercased(), cache.idScope == settings.idScope,
            cache.registrationId == settings.registrationId, cache.result.assignedHub != nil,
            cache.result.deviceId != nil
        else {
            logger.notice(
                "the cached DPS assignment is for another registration; registering", metadata: ["path": "\(cachePath)"]
            )
            return nil
        }
        return cache
    }

    /// Writes the cache whole (a temporary file renamed over it), mode 0600.
    private func writeCache(_ cache: Cache) {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? encoder.encode(cache) else { return }
        let temporary = cachePath + ".new"
        unlink(temporary)
        guard FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: 0o600]),
            rename(temporary, cachePath) == 0
        else {
            logger.warning(
                "cannot cache the DPS assignment; the next start registers again", metadata: ["path": "\(cachePath)"])
            return
        }
    }
}
