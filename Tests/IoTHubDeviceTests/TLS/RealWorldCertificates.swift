import Dispatch
import Foundation
import NIOConcurrencyHelpers

/// Certificates and keys as users have them, made by the `openssl` command: RSA-2048 and
/// RSA-4096, PKCS#8 and traditional keys, encrypted keys, bundles of several certificates, and
/// the system's CA bundle. Made once per test process, in a private directory.
struct RealWorldCertificates: Sendable {
    /// An RSA-4096 root CA and its key.
    let rootCA: String
    /// An RSA-2048 server certificate for localhost and 127.0.0.1, issued by the root.
    let serverCertificate: String
    let serverKey: String
    /// An RSA-2048 CA for devices, and a device certificate (CN dev1) it issued, with the
    /// device's key as unencrypted PKCS#8, traditional RSA, and PKCS#8 encrypted with
    /// `passPhrase` (AES-256).
    let deviceCA: String
    let deviceCertificate: String
    let deviceKeyPKCS8: String
    let deviceKeyTraditional: String
    let deviceKeyEncrypted: String
    let passPhrase = "correct horse battery staple"
    /// Three EC certificates in one file.
    let ecBundle: String
    /// The system's CA bundle (Debian's ca-certificates), the largest input a user gives.
    let systemBundle: String

    private static let made = NIOLockedValueBox<Result<RealWorldCertificates, OpenSSLCommandFailure>?>(nil)

    /// The certificates, made on first use. Making RSA keys takes seconds of `openssl`: it runs
    /// on a Dispatch thread, never blocking a thread of Swift's cooperative pool (other tests'
    /// tasks run there).
    static func shared() async throws(OpenSSLCommandFailure) -> RealWorldCertificates {
        if let made = made.withLockedValue({ $0 }) { return try made.get() }
        let result = await withCheckedContinuation {
            (continuation: CheckedContinuation<Result<RealWorldCertificates, OpenSSLCommandFailure>, Never>) in
            DispatchQueue.global().async {
                let result = made.withLockedValue { made in
                    if let made { return made }
                    let result = Result { () throws(OpenSSLCommandFailure) in try make() }
                    made = result
                    return result
                }
                continuation.resume(returning: result)
            }
        }
        return try result.get()
    }

    private static func make() throws(OpenSSLCommandFailure) -> RealWorldCertificates {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("iothub-rsa-\(UUID().uuidString)")
            .path
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func path(_ name: String) -> String { directory + "/" + name }
        func read(_ name: String) -> String { (try? String(contentsOfFile: path(name), encoding: .utf8)) ?? "" }
        let caExtensions = [
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ]
        try run(
            [
                "req", "-x509", "-newkey", "rsa:4096", "-nodes", "-keyout", path("root.key"), "-out", path("root.pem"),
                "-days", "2", "-subj", "/CN=Test RSA Root",
            ] + caExtensions)
        try run(
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", path("devices.key"), "-out",
                path("devices.pem"), "-days", "2", "-subj", "/CN=Test Device CA",
            ] + caExtensions)
        _ = FileManager.default.createFile(
            atPath: path("server.ext"),
            contents: Data("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n".utf8))
        _ = FileManager.default.createFile(
            atPath: path("client.ext"), contents: Data("extendedKeyUsage=clientAuth\n".utf8))
        try run([
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", path("server.key"), "-out", path("server.csr"), "-subj",
            "/CN=localhost",
        ])
        try run([
            "x509", "-req", "-in", path("server.csr"), "-CA", path("root.pem"), "-CAkey", path("root.key"),
            "-CAcreateserial", "-days", "2", "-out", path("server.pem"), "-extfile", path("server.ext"),
        ])
        try run([
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", path("device.key"), "-out", path("device.csr"), "-subj",
            "/CN=dev1",
        ])
        try run([
            "x509", "-req", "-in", path("device.csr"), "-CA", path("devices.pem"), "-CAkey", path("devices.key"),
            "-CAcreateserial", "-days", "2", "-out", path("device.pem"), "-extfile", path("client.ext"),
        ])
        try run(["rsa", "-in", path("device.key"), "-traditional", "-out", path("device-traditional.key")])
        try run([
            "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", path("device.key"), "-out", path("device-encrypted.key"),
            "-passout", "pass:correct horse battery staple",
        ])
        for index in 1...3 {
            try run([
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                path("ec\(index).key"), "-out", path("ec\(index).pem"), "-days", "2", "-subj", "/CN=EC \(index)",
            ])
        }
        return RealWorldCertificates(
            rootCA: read("root.pem"), serverCertificate: read("server.pem"), serverKey: read("server.key"),
            deviceCA: read("devices.pem"),
            deviceCertificate: read("device.pem"), deviceKeyPKCS8: read("device.key"),
            deviceKeyTraditional: read("device-traditional.key"),
            deviceKeyEncrypted: read("device-encrypted.key"),
            ecBundle: read("ec1.pem") + read("ec2.pem") + read("ec3.pem"),
            systemBundle: (try? String(contentsOfFile: "/etc/ssl/certs/ca-certificates.crt", encoding: .utf8)) ?? "")
    }

    private static func run(_ arguments: [String]) throws(OpenSSLCommandFailure) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        let errors = Pipe()
        process.standardError = errors
        do {
            try process.run()
        } catch {
            throw OpenSSLCommandFailure(description: "cannot run openssl (scripts/setup installs it): \(error)")
        }
        let output = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw OpenSSLCommandFailure(
                description:
                    "openssl \(arguments.prefix(2).joined(separator: " ")) failed: \(String(decoding: output, as: UTF8.self))"
            )
        }
    }
}

struct OpenSSLCommandFailure: Error, CustomStringConvertible {
    var description: String
}
