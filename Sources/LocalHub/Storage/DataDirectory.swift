import Foundation

/// The files in LocalHub's data directory: what must survive a restart.
///
/// ```
/// ca.pem                      the CA to trust (give it to SDKs as server_verification_cert)
/// server-cert.pem, server-key.pem
/// service-connection-string   the owner policy's connection string (mode 0600)
/// dps-id-scope                the provisioning service's ID scope
/// provisioning-service-connection-string   its service policy's connection string (mode 0600)
/// state.json                  registry, twins, queued cloud-to-device messages, subscriptions
/// ```
/// Every file is written atomically (a temporary file, fsync, rename), so a crash leaves the
/// old or the new version, never half of one.
struct DataDirectory: Sendable {
    let url: URL

    var caCertificate: URL { url.appendingPathComponent("ca.pem") }
    var serverCertificate: URL { url.appendingPathComponent("server-cert.pem") }
    var serverPrivateKey: URL { url.appendingPathComponent("server-key.pem") }
    var serviceConnectionString: URL { url.appendingPathComponent("service-connection-string") }
    var state: URL { url.appendingPathComponent("state.json") }
    var idScope: URL { url.appendingPathComponent("dps-id-scope") }
    var provisioningServiceConnectionString: URL {
        url.appendingPathComponent("provisioning-service-connection-string")
    }

    /// Creates the directory (mode 0700) if needed.
    init(path: String) throws(LocalHubError) {
        url = URL(fileURLWithPath: path, isDirectory: true)
        do {
            try FileManager.default.createDirectory(
                at: url, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw .dataDirectory("cannot create \(path): \(error.localizedDescription)")
        }
    }

    /// Reads a file, or nil when it does not exist.
    func read(_ file: URL) throws(LocalHubError) -> Data? {
        guard FileManager.default.fileExists(atPath: file.path) else { return nil }
        do {
            return try Data(contentsOf: file)
        } catch {
            throw .dataDirectory("cannot read \(file.path): \(error.localizedDescription)")
        }
    }

    /// Writes a file atomically with the given permissions.
    func write(_ data: Data, to file: URL, permissions: Int = 0o600) throws(LocalHubError) {
        let temporary = file.deletingLastPathComponent()
            .appendingPathComponent(".\(file.lastPathComponent).\(UUID().uuidString).tmp")
        let created = FileManager.default.createFile(
            atPath: temporary.path, contents: nil, attributes: [.posixPermissions: permissions])
        guard created, let handle = try? FileHandle(forWritingTo: temporary) else {
            throw .dataDirectory("cannot write \(temporary.path)")
        }
        do {
            try handle.write(contentsOf: data)
            try handle.synchronize()
            try handle.close()
            guard rename(temporary.path, file.path) == 0 else {
                throw LocalHubError.dataDirectory("cannot rename \(temporary.path) to \(file.path): errno \(errno)")
            }
        } catch {
            try? handle.close()
            try? FileManager.default.removeItem(at: temporary)
            throw error as? LocalHubError ?? .dataDirectory("cannot write \(file.path): \(error.localizedDescription)")
        }
    }

    /// Loads the certificates, making new ones when they are missing or do not cover `hostName`.
    func loadOrCreateCertificates(hostName: String) throws(LocalHubError) -> CertificateAuthority {
        if let ca = try read(caCertificate), let cert = try read(serverCertificate),
            let key = try read(serverPrivateKey)
        {
            guard let caText = String(data: ca, encoding: .utf8), let certText = String(data: cert, encoding: .utf8),
                let keyText = String(data: key, encoding: .utf8)
            else { throw .dataDirectory("the certificate files in \(url.path) are not PEM text") }
            let authority = CertificateAuthority(
                caCertificatePEM: caText, serverCertificatePEM: certText, serverPrivateKeyPEM: keyText)
            if authority.serverCertificateCovers(hostName) { return authority }
        }
        let authority: CertificateAuthority
        do {
            authority = try CertificateAuthority.generate(hostNames: [hostName])
        } catch {
            throw .dataDirectory("cannot generate certificates: \(error)")
        }
        try write(Data(authority.caCertificatePEM.utf8), to: caCertificate, permissions: 0o644)
        try write(Data(authority.serverCertificatePEM.utf8), to: serverCertificate, permissions: 0o644)
        try write(Data(authority.serverPrivateKeyPEM.utf8), to: serverPrivateKey, permissions: 0o600)
        return authority
    }
}
