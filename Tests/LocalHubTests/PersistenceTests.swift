import Foundation
import IoTHubProtocol
import Logging
import Testing

@testable import LocalHub

/// What must survive a restart of the hub survives it; a damaged data directory is reported.
@Suite(.serialized, .timeLimit(.minutes(3))) struct PersistenceTests {
    static func temporaryDirectory() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("localhub-persist-\(UUID().uuidString)").path
    }

    static func makeHub(_ directory: String) throws -> LocalHub {
        var logger = Logger(label: "test")
        logger.logLevel = .error
        return try LocalHub(
            configuration: .init(mqttPort: 0, httpsPort: 0, blobPort: 0, dataDirectory: directory, devices: ["dev1"]),
            logger: logger)
    }

    @Test func registryTwinsQueuesKeysAndCertificatesSurviveARestart() async throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }

        let first = try Self.makeHub(directory)
        _ = try await first.start()
        let connectionString = try first.deviceConnectionString(deviceId: "dev1")
        let moduleString = try first.deviceConnectionString(deviceId: "dev1", moduleId: "filter")
        _ = try first.hub.patchDesired(
            IdentityKey(deviceId: "dev1"), patch: ["fan": 3], tags: ["room": "lab"], replace: false, ifMatch: nil)
        _ = try first.hub.enqueueCloudToDevice(
            to: "dev1", message: Message(payload: Data("queued".utf8), messageId: "q1", properties: ["p": "v"]),
            timeToLive: 600)
        let serviceConnectionString = first.serviceConnectionString
        let ca = first.caCertificatePEM
        await first.stop()

        let mode =
            try FileManager.default.attributesOfItem(atPath: directory + "/service-connection-string")[
                .posixPermissions] as? Int
        #expect(mode == 0o600)
        #expect(FileManager.default.fileExists(atPath: directory + "/state.json"))

        let second = try Self.makeHub(directory)
        #expect(second.caCertificatePEM == ca)
        #expect(second.serviceConnectionString == serviceConnectionString)
        #expect(try second.deviceConnectionString(deviceId: "dev1") == connectionString)
        #expect(try second.deviceConnectionString(deviceId: "dev1", moduleId: "filter") == moduleString)
        let record = try #require(second.hub.identity(IdentityKey(deviceId: "dev1")))
        #expect(record.desired.properties == ["fan": 3])
        #expect(record.desired.version == 2)
        #expect(record.tags == ["room": "lab"])
        let queued = try #require(record.cloudToDevice.first)
        #expect(String(decoding: queued.payload, as: UTF8.self) == "queued")
        #expect(PropertyBag(queued.properties.map(\.entry))["$.mid"] == "q1")
    }

    @Test func aDamagedStateFileIsAClearErrorNotACrash() throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = try Self.makeHub(directory)
        try Data("{ not json".utf8).write(to: URL(fileURLWithPath: directory + "/state.json"))
        do {
            _ = try Self.makeHub(directory)
            Issue.record("a damaged state.json was accepted")
        } catch {
            #expect("\(error)".contains("state.json"))
            #expect("\(error)".contains("move it away"))
        }
        try FileManager.default.removeItem(atPath: directory + "/state.json")
        try Data("HostName=localhost;DeviceId=x;SharedAccessKey=AAAA".utf8).write(
            to: URL(fileURLWithPath: directory + "/service-connection-string"))
        #expect(throws: LocalHubError.self) { try Self.makeHub(directory) }
    }

    @Test func aChangedHostNameGetsANewServerCertificate() throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = try LocalHub(
            configuration: .init(
                hostName: "localhost", mqttPort: 0, httpsPort: 0, blobPort: 0, dataDirectory: directory))
        let before = try String(contentsOfFile: directory + "/server-cert.pem", encoding: .utf8)
        _ = try LocalHub(
            configuration: .init(
                hostName: "hub.example.test", mqttPort: 0, httpsPort: 0, blobPort: 0, dataDirectory: directory))
        let after = try String(contentsOfFile: directory + "/server-cert.pem", encoding: .utf8)
        #expect(before != after)
        let authority = CertificateAuthority(caCertificatePEM: "", serverCertificatePEM: after, serverPrivateKeyPEM: "")
        #expect(authority.serverCertificateCovers("hub.example.test"))
    }
}
