import Foundation
import IoTHubProtocol
import Logging
import Testing

@testable import IoTHubDevice
@testable import LocalHub

/// `cipher` is one policy for every connection: what each TLS stack offers in its ClientHello
/// (libmosquitto's OpenSSL, the tunnel's BoringSSL, libcurl for file upload) is the list and
/// nothing else, TLS 1.3 included; a list the hub can meet works end to end, on every path.
@Suite(.serialized, .timeLimit(.minutes(5))) struct CipherSelectionTests {
    /// Which of the client's TLS stacks opens the connection.
    enum Stack: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case mqtt, webSocket, fileUpload
        var testDescription: String { rawValue }
    }

    /// A cipher list and what a ClientHello made with it must offer.
    struct Case: Sendable, CustomTestStringConvertible {
        let list: String
        let suites: Set<UInt16>
        let versions: Set<UInt16>
        var testDescription: String { list }

        /// TLS 1.2 and TLS 1.3 restricted at once (all three of BoringSSL's TLS 1.3 suites, which
        /// the tunnel cannot leave out).
        static let both = Case(
            list: "ECDHE-ECDSA-AES256-GCM-SHA384:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                + "TLS_CHACHA20_POLY1305_SHA256",
            suites: [0xC02C, 0x1301, 0x1302, 0x1303], versions: [ClientHello.tls12, ClientHello.tls13])
        /// No TLS 1.3 suite: TLS 1.2 only.
        static let tls12Only = Case(
            list: "ECDHE-ECDSA-AES128-GCM-SHA256,ECDHE-RSA-AES128-GCM-SHA256", suites: [0xC02B, 0xC02F],
            versions: [ClientHello.tls12])
        /// One TLS 1.3 suite alone: TLS 1.3 only (not possible through the tunnel).
        static let oneTLS13Suite = Case(
            list: "TLS_AES_256_GCM_SHA384", suites: [0x1302], versions: [ClientHello.tls13])
    }

    private static let key = Data("0123456789abcdef0123456789abcdef".utf8).base64EncodedString()

    private func client(reaching port: Int, over stack: Stack, cipher: String) throws -> IoTHubDeviceClient {
        var configuration = DeviceClientConfiguration(
            cipher: cipher, connectionRetry: false, operationTimeout: .seconds(10), websockets: stack == .webSocket)
        configuration.mqttPort = port
        configuration.httpsPort = port
        var logger = Logger(label: "cipher-test")
        logger.logLevel = .critical
        return try IoTHubDeviceClient.fromSymmetricKey(
            Self.key, hostName: "localhost", deviceId: "dev1", configuration: configuration, logger: logger)
    }

    private func offered(by stack: Stack, with list: String) async throws -> ClientHello? {
        let recorder = try await ClientHelloRecorder.start()
        let client = try client(reaching: recorder.port, over: stack, cipher: list)
        switch stack {
        case .mqtt, .webSocket: _ = try? await client.connect()
        case .fileUpload: _ = try? await client.storageInfo(forBlob: "report.csv")
        }
        await client.shutdown()
        await recorder.stop()
        return recorder.received.first
    }

    @Test(arguments: Stack.allCases, [Case.both, .tls12Only])
    func everyStackOffersTheListAndNothingElse(stack: Stack, expected: Case) async throws {
        let hello = try #require(try await offered(by: stack, with: expected.list), "no ClientHello arrived")
        #expect(hello.cipherSuites == expected.suites)
        #expect(hello.versions == expected.versions)
    }

    @Test(arguments: [Stack.mqtt, .fileUpload])
    func aListOfTLS13SuitesAloneAsksForTLS13(stack: Stack) async throws {
        let expected = Case.oneTLS13Suite
        let hello = try #require(try await offered(by: stack, with: expected.list), "no ClientHello arrived")
        #expect(hello.cipherSuites == expected.suites)
        #expect(hello.versions == expected.versions)
    }

    @Test func theTunnelRefusesAtCreationToLeaveOutTLS13SuitesItAlwaysOffers() throws {
        do {
            _ = try client(reaching: 8883, over: .webSocket, cipher: Case.oneTLS13Suite.list)
            Issue.record("the client was created")
        } catch let error as IoTHubError {
            #expect(error.code == "ValueError")
            #expect("\(error)".contains("TLS_CHACHA20_POLY1305_SHA256"), "\(error)")
        }
    }

    @Test(arguments: ["TLS_AES_512_GCM_SHA1024", "NOT-A-CIPHER", " : "])
    func aListNoStackCanUseIsRefusedAtCreation(list: String) throws {
        for stack in Stack.allCases {
            #expect(throws: IoTHubError.self, "\(stack)") {
                _ = try client(reaching: 8883, over: stack, cipher: list)
            }
        }
    }

    /// A list LocalHub's certificate (EC) can meet: telemetry and file upload go through, on
    /// both transports, with TLS 1.3 allowed and with TLS 1.2 alone.
    @Test(arguments: Transport.allCases, [true, false])
    func aListTheHubCanMeetWorksEndToEnd(over transport: Transport, allowingTLS13: Bool) async throws {
        let list =
            allowingTLS13
            ? "ECDHE-ECDSA-AES128-GCM-SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
            : "ECDHE-ECDSA-AES128-GCM-SHA256"
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: transport) { $0.cipher = list }
            try await client.connect()
            try await client.send(Message(payload: Data("restricted suites".utf8)))
            let payload = Data("uploaded through the same suites".utf8)
            let result = try await client.uploadBlob(
                named: "ciphers.txt", length: payload.count,
                body: AsyncStream { continuation in
                    continuation.yield(payload)
                    continuation.finish()
                })
            await client.shutdown()
            #expect(result.storageInfo.blobName.hasSuffix("ciphers.txt"))
            #expect(fixture.telemetry.contains { $0.message.payload == Data("restricted suites".utf8) })
        }
    }

    /// A list the hub cannot meet (RSA key exchange only, against LocalHub's EC certificate)
    /// fails the handshake: the list is what the connection negotiates with.
    @Test(arguments: Transport.allCases) func aListTheHubCannotMeetFailsTheHandshake(over transport: Transport)
        async throws
    {
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: transport) {
                $0.cipher = "ECDHE-RSA-AES128-GCM-SHA256"
                $0.connectionRetry = false
            }
            await #expect(throws: IoTHubError.self) { try await client.connect() }
            await client.shutdown()
            #expect(fixture.telemetry.isEmpty)
        }
    }
}
