import Foundation
import IoTHubProtocol

extension Hub {
    /// Checks the credential of a service-API or `/local` request: a SAS token of the owner
    /// policy for this hub.
    /// - Parameter authorization: the request's `Authorization` header, if any.
    func authorizeService(_ authorization: String?, now: Date = Date()) throws(ServiceError) {
        guard let header = authorization else {
            throw .unauthorized("missing Authorization header: send a SAS token of the '\(ownerPolicyName)' policy")
        }
        guard let token = try? SASToken(parsing: header) else { throw .unauthorized("the Authorization header is not a SAS token") }
        let resource = token.resourceURI.lowercased()
        guard resource == hostName.lowercased() || resource.hasPrefix(hostName.lowercased() + "/") else {
            throw .unauthorized("the token is for '\(token.resourceURI)', not for \(hostName)")
        }
        guard token.keyName == ownerPolicyName else { throw .unauthorized("the token is not signed by the '\(ownerPolicyName)' policy") }
        guard !token.isExpired(at: now) else { throw .unauthorized("the token expired") }
        guard token.isSigned(withKey: ownerPolicyKey) else { throw .unauthorized("the token's signature is not valid") }
    }

    /// Checks the credential of a device's HTTPS request: its SAS token (or one of its
    /// modules'), or its X.509 client certificate.
    /// - Parameters:
    ///   - authorization: the request's `Authorization` header, if any.
    ///   - clientCertificateDER: the TLS client certificate, if one was presented.
    func authorizeDevice(_ key: IdentityKey, authorization: String?, clientCertificateDER: [UInt8]?, now: Date = Date()) throws(ServiceError) {
        if let header = authorization, let token = try? SASToken(parsing: header) {
            let resource = SASToken.resourceURI(hostName: hostName, deviceId: key.deviceId).lowercased()
            guard token.resourceURI.lowercased() == resource || token.resourceURI.lowercased().hasPrefix(resource + "/modules/") else {
                throw .unauthorized("the token is for '\(token.resourceURI)', not for device \(key.deviceId)")
            }
            guard !token.isExpired(at: now) else { throw .unauthorized("the token expired") }
            // The token's own identity (the device, or one of its modules) must exist and be enabled;
            // an unknown identity is refused like a bad signature, so callers cannot probe the registry.
            var signer = key
            if token.resourceURI.lowercased().hasPrefix(resource + "/modules/"), let moduleId = token.resourceURI.split(separator: "/").last {
                signer = IdentityKey(deviceId: key.deviceId, moduleId: String(moduleId))
            }
            guard let record = identity(signer), record.status == "enabled" else {
                throw .unauthorized("the token's signature is not valid")
            }
            let keys = [record.authentication.primaryKey, record.authentication.secondaryKey].compactMap { $0 }
            guard keys.contains(where: { token.isSigned(withKey: $0) }) else { throw .unauthorized("the token's signature is not valid") }
            return
        }
        if let der = clientCertificateDER {
            let credentials = ConnectCredentials(
                clientId: key.clientId, username: "\(hostName)/\(key.clientId)/?", password: nil, clientCertificateDER: der)
            if case .success = authenticate(credentials, now: now) { return }
            throw .unauthorized("the client certificate does not match \(key)")
        }
        throw .unauthorized("missing Authorization header: send the device's SAS token")
    }
}
