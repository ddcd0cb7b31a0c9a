import Foundation
import IoTHubProtocol
import Logging
import Testing

@testable import IoTHubDevice
@testable import LocalHub

/// The hub's certificate is checked against the hub's (or gateway's) name on every path the
/// client has (MQTT over TLS by libmosquitto, the NIOSSL tunnel for WebSockets and proxies,
/// libcurl for file upload), never against the address the socket is connected to: a proxy
/// with a certificate for its own address must not receive the device's token.
@Suite(.serialized, .timeLimit(.minutes(5))) struct TLSPeerVerificationTests {
    /// How the client reaches the server that is not the hub.
    enum Path: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case mqtt, webSocket, httpProxy, webSocketThroughHTTPProxy
        var testDescription: String { rawValue }
        var throughProxy: Bool { self == .httpProxy || self == .webSocketThroughHTTPProxy }
        var webSocket: Bool { self == .webSocket || self == .webSocketThroughHTTPProxy }
    }

    /// What is wrong with the server's certificate.
    enum Forgery: String, CaseIterable, Sendable, CustomTestStringConvertible {
        /// Valid, from a trusted CA, but naming only the address the client connected to.
        case connectedAddressOnly
        case anotherHost
        case expired
        case untrustedIssuer
        var testDescription: String { rawValue }

        /// What OpenSSL says, and the error must carry.
        var reason: String {
            switch self {
            case .connectedAddressOnly, .anotherHost: "hostname mismatch: it is not valid for localhost"
            case .expired: "certificate has expired"
            case .untrustedIssuer: "unable to get local issuer certificate"
            }
        }
    }

    private static let key = Data("0123456789abcdef0123456789abcdef".utf8).base64EncodedString()

    private func forgedIdentity(_ forgery: Forgery, serverHost: String, trusted: TestCertificateAuthority) throws
        -> TestServerIdentity
    {
        switch forgery {
        case .connectedAddressOnly: return try trusted.serverCertificate(names: [serverHost])
        case .anotherHost: return try trusted.serverCertificate(names: ["other.example"])
        case .expired:
            let now = Date()
            return try trusted.serverCertificate(
                names: ["localhost", "127.0.0.1"],
                validity: now.addingTimeInterval(-7200)...now.addingTimeInterval(-3600))
        case .untrustedIssuer:
            return try TestCertificateAuthority(commonName: "someone else's CA").serverCertificate(names: [
                "localhost", "127.0.0.1",
            ])
        }
    }

    private func client(
        reaching server: InterceptingServer, over path: Path, trusting trusted: TestCertificateAuthority
    ) throws -> IoTHubDeviceClient {
        var configuration = DeviceClientConfiguration(
            serverVerificationCertificate: try trusted.pem, connectionRetry: false, operationTimeout: .seconds(10),
            websockets: path.webSocket)
        if path.throughProxy {
            configuration.proxyOptions = ProxyOptions(kind: .http, address: server.host, port: server.port)
        } else {
            configuration.mqttPort = server.port
            configuration.httpsPort = server.port
        }
        var logger = Logger(label: "tls-test")
        logger.logLevel = .error
        return try IoTHubDeviceClient.fromSymmetricKey(
            Self.key, hostName: "localhost", deviceId: "dev1", configuration: configuration, logger: logger)
    }

    @Test(arguments: Path.allCases, Forgery.allCases)
    func aServerWithoutAValidCertificateForTheHubGetsNoMQTTByte(path: Path, forgery: Forgery) async throws {
        let trusted = try TestCertificateAuthority()
        // A proxy is not the hub: it gets an address of its own.
        let serverHost = path.throughProxy ? "127.0.0.2" : "127.0.0.1"
        let server = try await InterceptingServer.start(
            host: serverHost, identity: try forgedIdentity(forgery, serverHost: serverHost, trusted: trusted),
            actingAsHTTPProxy: path.throughProxy)
        let client = try client(reaching: server, over: path, trusting: trusted)
        var failure: IoTHubError?
        do {
            try await client.connect()
        } catch {
            failure = error
        }
        await client.shutdown()
        await server.stop()
        #expect(server.connectionCount >= 1, "the client never reached the server")
        #expect(failure?.code == "ConnectionFailedError", "\(String(describing: failure))")
        #expect("\(String(describing: failure))".contains(forgery.reason), "\(String(describing: failure))")
        #expect(server.applicationBytes == 0, "the server received \(server.applicationBytes) bytes of MQTT or HTTP")
    }

    /// File upload (libcurl) asks the hub for a blob: the same refusal, directly and through a proxy.
    @Test(arguments: [Path.mqtt, .httpProxy], Forgery.allCases)
    func fileUploadRequestsRefuseTheSameCertificates(path: Path, forgery: Forgery) async throws {
        let trusted = try TestCertificateAuthority()
        let serverHost = path.throughProxy ? "127.0.0.2" : "127.0.0.1"
        let server = try await InterceptingServer.start(
            host: serverHost, identity: try forgedIdentity(forgery, serverHost: serverHost, trusted: trusted),
            actingAsHTTPProxy: path.throughProxy)
        let client = try client(reaching: server, over: path, trusting: trusted)
        var failure: IoTHubError?
        do {
            _ = try await client.storageInfo(forBlob: "report.csv")
        } catch {
            failure = error
        }
        await client.shutdown()
        await server.stop()
        #expect(server.connectionCount >= 1, "the client never reached the server")
        #expect(failure?.code == "ConnectionFailedError", "\(String(describing: failure))")
        #expect(server.applicationBytes == 0, "the server received \(server.applicationBytes) bytes of HTTP")
    }

    /// A gateway given as an IP address is checked against the certificate's IP addresses
    /// (LocalHub's certificate names 127.0.0.1), on the direct path and through the tunnel.
    @Test(arguments: Transport.allCases) func aGatewayGivenAsAnIPAddressIsAcceptedByItsIPAddressEntry(
        over transport: Transport
    ) async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: transport) { $0.gatewayHostName = "127.0.0.1" }
            try await client.connect()
            try await client.send(Message(payload: Data("via an address".utf8)))
            let info = try await client.storageInfo(forBlob: "by-address.txt")
            #expect(info.blobName.hasSuffix("by-address.txt"))
            await client.shutdown()
            #expect(fixture.telemetry.contains { $0.message.payload == Data("via an address".utf8) })
        }
    }

    @Test func peerNamesTellAddressesFromHostNames() {
        #expect(PeerName(host: "127.0.0.1") == .ipAddress("127.0.0.1"))
        #expect(PeerName(host: "[::1]") == .ipAddress("::1"))
        #expect(PeerName(host: "::1") == .ipAddress("::1"))
        #expect(PeerName(host: "myhub.azure-devices.net") == .dnsName("myhub.azure-devices.net"))
        #expect(PeerName(host: "127.0.0.1").serverNameIndication == nil)
        #expect(PeerName(host: "gateway.local").serverNameIndication == "gateway.local")
    }
}
