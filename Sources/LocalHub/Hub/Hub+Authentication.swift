import Foundation
import IoTHubProtocol
import NIOCore

/// What a CONNECT presented, for authentication.
struct ConnectCredentials: Sendable {
    var clientId: String
    var username: String?
    var password: ByteBuffer?
    /// DER of the client certificate from the TLS handshake, if one was presented.
    var clientCertificateDER: [UInt8]?
}

extension Hub {
    /// Checks a CONNECT like IoT Hub: client id and user name shape, identity exists and is
    /// enabled, then the SAS token (signature, expiry, resource) or the X.509 thumbprint.
    ///
    /// - Returns: the identity and, for SAS, when the token expires (the hub then closes the
    ///   connection, as IoT Hub does).
    func authenticate(_ credentials: ConnectCredentials, now: Date = Date()) -> Result<
        (IdentityKey, Date?), ConnackPacket.ReturnCode
    > {
        guard let key = IdentityKey(clientId: credentials.clientId) else { return .failure(.identifierRejected) }
        guard let usernameText = credentials.username, let username = MQTTUsername(parsing: usernameText),
            username.clientId == credentials.clientId,
            username.hostName.lowercased() == hostName.lowercased()
        else { return .failure(.badUsernameOrPassword) }

        let (record, refused) = state.withLockedValue { state in
            (state.identities[key], state.faults.refusesConnections(at: now))
        }
        if refused { return .failure(.serverUnavailable) }
        guard let record, record.status == "enabled" else { return .failure(.notAuthorized) }

        switch record.authentication.type {
        case .sas:
            guard let password = credentials.password,
                let text = password.getString(at: password.readerIndex, length: password.readableBytes),
                let token = try? SASToken(parsing: text)
            else { return .failure(.badUsernameOrPassword) }
            let expectedResource = SASToken.resourceURI(
                hostName: hostName, deviceId: key.deviceId, moduleId: key.moduleId)
            guard token.resourceURI.lowercased() == expectedResource.lowercased(), token.keyName == nil,
                !token.isExpired(at: now)
            else { return .failure(.notAuthorized) }
            let keys = [record.authentication.primaryKey, record.authentication.secondaryKey].compactMap { $0 }
            guard keys.contains(where: { token.isSigned(withKey: $0) }) else { return .failure(.notAuthorized) }
            return .success((key, token.expiryDate))
        case .selfSigned, .certificateAuthority:
            guard let der = credentials.clientCertificateDER else { return .failure(.notAuthorized) }
            if record.authentication.type == .selfSigned {
                let presented = [CertificateThumbprint.sha1(der), CertificateThumbprint.sha256(der)]
                let registered = [record.authentication.primaryThumbprint, record.authentication.secondaryThumbprint]
                    .compactMap { $0?.uppercased() }
                guard presented.contains(where: registered.contains) else { return .failure(.notAuthorized) }
            } else {
                guard CertificateInspection.commonName(ofDER: der) == key.deviceId else {
                    return .failure(.notAuthorized)
                }
            }
            return .success((key, nil))
        case .none:
            return .failure(.notAuthorized)
        }
    }

    /// Checks the credential of a service-API or `/local` request: a SAS token of the owner
    /// policy for this hub.
    /// - Parameter authorization: the request's `Authorization` header, if any.
    func authorizeService(_ authorization: String?, now: Date = Date()) throws(ServiceError) {
        guard let header = authorization else {
            throw .unauthorized("missing Authorization header: send a SAS token of the '\(ownerPolicyName)' policy")
        }
        guard let token = try? SASToken(parsing: header) else {
            throw .unauthorized("the Authorization header is not a SAS token")
        }
        let resource = token.resourceURI.lowercased()
        guard resource == hostName.lowercased() || resource.hasPrefix(hostName.lowercased() + "/") else {
            throw .unauthorized("the token is for '\(token.resourceURI)', not for \(hostName)")
        }
        guard token.keyName == ownerPolicyName else {
            throw .unauthorized("the token is not signed by the '\(ownerPolicyName)' policy")
        }
        guard !token.isExpired(at: now) else { throw .unauthorized("the token expired") }
        guard token.isSigned(withKey: ownerPolicyKey) else { throw .unauthorized("the token's signature is not valid") }
    }

    /// Checks the credential of a direct-method invocation: the owner policy's token, or — as
    /// an IoT Edge hub takes it from its modules — a module's own SAS token together with
    /// `x-ms-edge-moduleId: {deviceId}/{moduleId}` naming that module.
    func authorizeMethodInvocation(_ request: RouterRequest, now: Date = Date()) throws(ServiceError) {
        guard let caller = request.headers.first(name: "x-ms-edge-moduleId") else {
            try authorizeService(request.authorization, now: now)
            return
        }
        let parts = caller.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw .unauthorized("x-ms-edge-moduleId must be {deviceId}/{moduleId}")
        }
        guard let header = request.authorization, let token = try? SASToken(parsing: header) else {
            throw .unauthorized("missing Authorization header: send the module's SAS token")
        }
        let module = SASToken.resourceURI(hostName: hostName, deviceId: parts[0], moduleId: parts[1])
        guard token.resourceURI.lowercased() == module.lowercased() else {
            throw .unauthorized("the token is for '\(token.resourceURI)', not for the module in x-ms-edge-moduleId")
        }
        try authorizeDevice(
            IdentityKey(deviceId: parts[0]), authorization: header, clientCertificateDER: nil, now: now)
    }

    /// Checks the credential of a device's HTTPS request: its SAS token (or one of its
    /// modules'), or its X.509 client certificate.
    /// - Parameters:
    ///   - authorization: the request's `Authorization` header, if any.
    ///   - clientCertificateDER: the TLS client certificate, if one was presented.
    func authorizeDevice(_ key: IdentityKey, authorization: String?, clientCertificateDER: [UInt8]?, now: Date = Date())
        throws(ServiceError)
    {
        if let header = authorization, let token = try? SASToken(parsing: header) {
            let resource = SASToken.resourceURI(hostName: hostName, deviceId: key.deviceId).lowercased()
            guard
                token.resourceURI.lowercased() == resource
                    || token.resourceURI.lowercased().hasPrefix(resource + "/modules/")
            else {
                throw .unauthorized("the token is for '\(token.resourceURI)', not for device \(key.deviceId)")
            }
            guard !token.isExpired(at: now) else { throw .unauthorized("the token expired") }
            // The token's own identity (the device, or one of its modules) must exist and be enabled;
            // an unknown identity is refused like a bad signature, so callers cannot probe the registry.
            var signer = key
            if token.resourceURI.lowercased().hasPrefix(resource + "/modules/"),
                let moduleId = token.resourceURI.split(separator: "/").last
            {
                signer = IdentityKey(deviceId: key.deviceId, moduleId: String(moduleId))
            }
            guard let record = identity(signer), record.status == "enabled" else {
                throw .unauthorized("the token's signature is not valid")
            }
            let keys = [record.authentication.primaryKey, record.authentication.secondaryKey].compactMap { $0 }
            guard keys.contains(where: { token.isSigned(withKey: $0) }) else {
                throw .unauthorized("the token's signature is not valid")
            }
            return
        }
        if let der = clientCertificateDER {
            let credentials = ConnectCredentials(
                clientId: key.clientId, username: "\(hostName)/\(key.clientId)/?", password: nil,
                clientCertificateDER: der)
            if case .success = authenticate(credentials, now: now) { return }
            throw .unauthorized("the client certificate does not match \(key)")
        }
        throw .unauthorized("missing Authorization header: send the device's SAS token")
    }
}
