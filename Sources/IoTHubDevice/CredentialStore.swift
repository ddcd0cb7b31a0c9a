import FoundationEssentials
import IoTHubProtocol
import NIOConcurrencyHelpers

/// The credential a client connects and uploads with — which `update_sastoken` may replace —
/// and the expiry of the token its connection uses. Shared by the MQTT side of the client and
/// its ``FileUploadClient``.
final class CredentialStore: Sendable {
    private struct State {
        var credential: DeviceCredential
        /// The expiry of the SAS token the last connection attempt used (nil with X.509).
        var tokenExpiry: Date?
    }

    let hostName: String
    let deviceId: String
    let moduleId: String?
    /// The lifetime of the SAS tokens the client signs with a key (`sastoken_ttl`).
    let tokenTimeToLive: Int
    private let state: NIOLockedValueBox<State>

    init(_ credential: DeviceCredential, hostName: String, deviceId: String, moduleId: String?, tokenTimeToLive: Int) {
        self.hostName = hostName
        self.deviceId = deviceId
        self.moduleId = moduleId
        self.tokenTimeToLive = tokenTimeToLive
        self.state = NIOLockedValueBox(State(credential: credential))
    }

    var credential: DeviceCredential {
        state.withLockedValue { $0.credential }
    }

    var tokenExpiry: Date? {
        state.withLockedValue { $0.tokenExpiry }
    }

    /// The MQTT password of a new connection: a SAS token (signed now, with a key or by the IoT
    /// Edge workload API), or nil with X.509. Records the token's expiry; `renewAt` is when a
    /// token signed here should be renewed (nil for one the application supplied: only it can
    /// make a new one).
    func connectionPassword() async throws(IoTHubError) -> (password: String?, renewAt: Date?) {
        if case .edgeWorkload(let workload) = credential {
            // Signed outside the lock: the workload API is an HTTP request.
            let token = try await workload.sasToken(
                resourceURI: SASToken.resourceURI(hostName: hostName, deviceId: deviceId, moduleId: moduleId),
                timeToLive: tokenTimeToLive)
            state.withLockedValue { $0.tokenExpiry = token.expiryDate }
            return (token.string, renewalDate(of: token))
        }
        return try state.withLock { state throws(IoTHubError) -> (String?, Date?) in
            switch state.credential {
            case .symmetricKey(let key):
                let token = try SASToken(
                    resourceURI: SASToken.resourceURI(hostName: hostName, deviceId: deviceId, moduleId: moduleId),
                    key: key,
                    timeToLive: tokenTimeToLive)
                state.tokenExpiry = token.expiryDate
                return (token.string, renewalDate(of: token))
            case .sasToken(let token):
                guard !token.isExpired() else {
                    throw .credentialError("the SAS token expired; give a new one with update_sastoken")
                }
                state.tokenExpiry = token.expiryDate
                return (token.string, nil)
            case .x509, .edgeWorkload:
                state.tokenExpiry = nil
                return (nil, nil)
            }
        }
    }

    /// A token for an HTTPS request to the hub (or the Edge hub): signed now with a key or by
    /// the workload API, the application's own, or nil with X.509.
    func requestToken() async throws(IoTHubError) -> SASToken? {
        let resourceURI = SASToken.resourceURI(hostName: hostName, deviceId: deviceId, moduleId: moduleId)
        switch credential {
        case .symmetricKey(let key):
            return try SASToken(resourceURI: resourceURI, key: key, timeToLive: tokenTimeToLive)
        case .sasToken(let token):
            return token
        case .edgeWorkload(let workload):
            return try await workload.sasToken(resourceURI: resourceURI, timeToLive: tokenTimeToLive)
        case .x509:
            return nil
        }
    }

    /// When a token signed by the client is renewed: two minutes (at most half its life)
    /// before it expires.
    private func renewalDate(of token: SASToken) -> Date {
        let margin = min(120, Double(tokenTimeToLive) / 2)
        return token.expiryDate.addingTimeInterval(-margin)
    }

    /// Replaces the application's SAS token (`update_sastoken`) once it is checked to be for
    /// this identity and not expired.
    func replaceToken(with token: SASToken) throws(IoTHubError) {
        try state.withLock { state throws(IoTHubError) in
            guard case .sasToken = state.credential else {
                throw .clientError("update_sastoken needs a client created from a SAS token")
            }
            try Self.check(token, hostName: hostName, deviceId: deviceId, moduleId: moduleId)
            state.credential = .sasToken(token)
        }
    }

    /// Host, device and module of a token's resource URI (`{host}/devices/{d}[/modules/{m}]`).
    static func identity(of token: SASToken) throws(IoTHubError) -> (
        hostName: String, deviceId: String, moduleId: String?
    ) {
        let parts = token.resourceURI.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3 || parts.count == 5, parts[1] == "devices", !parts[0].isEmpty, !parts[2].isEmpty,
            parts.count == 3 || (parts[3] == "modules" && !parts[4].isEmpty)
        else {
            throw .valueError(
                field: "sastoken",
                reason: "its resource '\(token.resourceURI)' is not {host}/devices/{id}[/modules/{id}]")
        }
        return (parts[0], parts[2], parts.count == 5 ? parts[4] : nil)
    }

    /// Checks that an application's token is for this identity and has not expired.
    static func check(_ token: SASToken, hostName: String, deviceId: String, moduleId: String?) throws(IoTHubError) {
        let (tokenHost, tokenDevice, tokenModule) = try identity(of: token)
        guard tokenHost.lowercased() == hostName.lowercased() else {
            throw .valueError(field: "sastoken", reason: "is for hub \(tokenHost), not \(hostName)")
        }
        guard tokenDevice == deviceId else {
            throw .valueError(field: "sastoken", reason: "is for device \(tokenDevice), not \(deviceId)")
        }
        guard tokenModule == moduleId else {
            throw .valueError(
                field: "sastoken",
                reason: tokenModule == nil ? "is for a device, not a module" : "is for module \(tokenModule ?? "")")
        }
        guard !token.isExpired() else { throw .valueError(field: "sastoken", reason: "has already expired") }
    }
}
