import Crypto
import Foundation
import IoTHubProtocol
import Logging
import NIOCore
import NIOPosix
import SwiftASN1
import Testing
import X509

@testable import IoTHubDevice
@testable import LocalHub

/// Reconnects, renewal, limits and identities, against a real LocalHub over TLS.
@Suite(.serialized, .timeLimit(.minutes(3))) struct DeviceClientLifecycleTests {
    @Test(arguments: Transport.allCases) func aShortTokenLifetimeRenewsWithoutLosingAMessage(over transport: Transport)
        async throws
    {
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: transport) { $0.sasTokenTimeToLive = 4 }
            try await client.connect()
            var sent = 0
            let deadline = ContinuousClock.now + .seconds(6)
            while ContinuousClock.now < deadline {
                try await client.send(Message(payload: Data("\(sent)".utf8), messageId: "r\(sent)"))
                sent += 1
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(Set(fixture.telemetry.compactMap(\.message.messageId)) == Set((0..<sent).map { "r\($0)" }))
            #expect(
                fixture.hub.state.withLockedValue { $0.lastConnectionId } >= 3, "the token was renewed by reconnecting")
            await client.shutdown()
        }
    }

    @Test(arguments: Transport.allCases) func aDesiredChangeMadeWhileDisconnectedArrivesAfterReconnect(
        over transport: Transport
    ) async throws {
        try await HubFixture.with { fixture in
            let key = IdentityKey(deviceId: "dev1")
            let client = try fixture.client(over: transport)
            let patches = client.desiredPropertiesPatches()
            #expect(
                await HubFixture.eventually {
                    fixture.hub.identity(key)?.subscriptions[TopicFilter.desiredPropertiesPatches] != nil
                })
            // The initial twin read records the version the reconnect compares with.
            #expect(await HubFixture.eventually { client.lastDesiredVersion.withLockedValue { $0 } != nil })
            fixture.hub.setFaults(Faults(refuseConnectionsUntil: Date().addingTimeInterval(1)))
            _ = fixture.hub.dropConnection(of: key)
            #expect(await HubFixture.eventually { !fixture.hub.isConnected(key) })
            _ = try fixture.hub.patchDesired(key, patch: ["mode": "eco"], tags: nil, replace: false, ifMatch: nil)
            let delivered = await first(of: patches, timeout: .seconds(15))
            #expect(delivered?["mode"] == "eco")
            #expect(delivered?["$version"] == 2)
            await client.shutdown()
        }
    }

    @Test func cloudToDeviceMessagesSentWhileDisconnectedArriveAfterReconnect() async throws {
        try await HubFixture.with { fixture in
            let key = IdentityKey(deviceId: "dev1")
            let client = try fixture.client()
            let messages = client.messages()
            #expect(
                await HubFixture.eventually {
                    fixture.hub.identity(key)?.subscriptions[TopicFilter.cloudToDevice(deviceId: "dev1")] != nil
                })
            await client.disconnect()
            #expect(await HubFixture.eventually { !fixture.hub.isConnected(key) })
            _ = try fixture.hub.enqueueCloudToDevice(
                to: "dev1", message: Message(payload: Data("while away".utf8), messageId: "away"), timeToLive: nil)
            try await client.connect()
            let message = await first(of: messages)
            #expect(message?.messageId == "away")
            await client.shutdown()
        }
    }

    @Test func twoClientsWithOneIdentityDoNotTradeTheConnectionInALoop() async throws {
        try await HubFixture.with { fixture in
            // The hub closes the older connection of a client id (takeover). Each client then
            // waits the retry interval (200 ms here) before taking it back, instead of at once.
            let older = try fixture.client()
            let newer = try fixture.client()
            let errors = older.backgroundErrors()
            try await older.connect()
            try await newer.connect()
            let error = await first(of: errors, timeout: .seconds(5))
            #expect(
                "\(String(describing: error))".contains("is another client connected as dev1"),
                "\(String(describing: error))")
            let before = fixture.hub.state.withLockedValue { $0.lastConnectionId }
            try await Task.sleep(for: .seconds(2))
            let connections = fixture.hub.state.withLockedValue { $0.lastConnectionId } - before
            // Two clients each reconnecting at most every 200 ms: about 20 in 2 s, not thousands.
            #expect(connections <= 30, "\(connections) connections in 2 s")
            await older.shutdown()
            await newer.shutdown()
        }
    }

    @Test func aMethodAnsweredAfterItsTimeoutIsDroppedByTheHub() async throws {
        try await HubFixture.with { fixture in
            let key = IdentityKey(deviceId: "dev1")
            let client = try fixture.client()
            let requests = client.methodRequests()
            #expect(
                await HubFixture.eventually {
                    fixture.hub.identity(key)?.subscriptions[TopicFilter.methodRequests] != nil
                })
            let lateResponder = Task { () throws -> Bool in
                for await request in requests {
                    try await Task.sleep(for: .milliseconds(600))
                    try await client.respond(MethodResponse(answering: request, status: 200))
                    return true
                }
                return false
            }
            await #expect(throws: ServiceError.self) {
                try await fixture.hub.invokeMethod(
                    on: key, name: "slow", payload: Data("null".utf8), responseTimeout: .milliseconds(200))
            }
            #expect(try await lateResponder.value, "the late answer is still accepted by the hub's MQTT side")
            #expect(fixture.hub.state.withLockedValue { $0.pendingMethods.isEmpty })
            await client.shutdown()
        }
    }

    @Test func theMessageSizeLimitIsCheckedBeforeSending() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client()
            try await client.send(Message(payload: Data(count: Message.maximumSize)))
            do {
                try await client.send(Message(payload: Data(count: Message.maximumSize - 3), properties: ["ab": "cd"]))
                Issue.record("an oversized message was sent")
            } catch {
                #expect(
                    error as? IoTHubError == .messageTooLarge(size: Message.maximumSize + 1, limit: Message.maximumSize)
                )
            }
            #expect(fixture.telemetry.count == 1)
            await client.shutdown()
        }
    }

    /// A property of 65,510 bytes is within IoT Hub's size limit but makes a topic longer
    /// than MQTT carries: refused before sending, for a single message and in a batch.
    @Test func theTopicLengthIsCheckedBeforeSending() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client()
            let tooLong = Message(payload: Data("x".utf8), properties: ["big": String(repeating: "v", count: 65_510)])
            await #expect(
                throws: IoTHubError.topicTooLong(
                    length: TelemetryTopic(deviceId: "dev1", message: tooLong).name.utf8.count, limit: 65_535)
            ) {
                try await client.send(tooLong)
            }
            let results = await client.send([
                Message(payload: Data("before".utf8)), tooLong, Message(payload: Data("after".utf8)),
            ])
            #expect(results.map { (try? $0.get()) != nil } == [true, false, true])
            if case .failure(let error) = results[1] {
                #expect(error.code == "ValueError" && "\(error)".contains("at most 65535 fit"), "\(error)")
            }
            #expect(fixture.telemetry.map(\.message.payload) == [Data("before".utf8), Data("after".utf8)])
            await client.shutdown()
        }
    }

    @Test(arguments: Transport.allCases) func aGatewayHostNameIsConnectedToWhileTokensNameTheHub(
        over transport: Transport
    ) async throws {
        var logger = Logger(label: "gateway-test")
        logger.logLevel = .error
        let localHub = try LocalHub(
            configuration: .init(
                hostName: "hub.example.test", mqttPort: 0, httpsPort: 0, blobPort: 0, devices: ["dev1"]), logger: logger
        )
        let ports = try await localHub.start()
        defer { Task { await localHub.stop() } }
        let connectionString = try localHub.deviceConnectionString(deviceId: "dev1") + ";GatewayHostName=localhost"
        let configuration = DeviceClientConfiguration(
            serverVerificationCertificate: localHub.caCertificatePEM, mqttPort: ports.mqtt, httpsPort: ports.https,
            websockets: transport == .webSocket)
        let client = try IoTHubDeviceClient.fromConnectionString(connectionString, configuration: configuration)
        #expect(client.hostName == "hub.example.test")
        #expect(client.configuration.gatewayHostName == "localhost")
        try await client.send(Message(payload: Data("via gateway".utf8)))
        #expect(localHub.hub.telemetry.lastSequenceNumber == 1)
        await client.shutdown()
        await localHub.stop()
    }

    @Test(arguments: Transport.allCases) func anX509IdentityConnectsWithItsCertificate(over transport: Transport)
        async throws
    {
        try await HubFixture.with { fixture in
            let key = P256.Signing.PrivateKey()
            let name = try DistinguishedName { CommonName("x509-device") }
            let certificate = try Certificate(
                version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
                notValidBefore: Date().addingTimeInterval(-60),
                notValidAfter: Date().addingTimeInterval(3600), issuer: name, subject: name,
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: .init(), issuerPrivateKey: .init(key))
            let pem = try certificate.serializeAsPEM().pemString
            var serializer = DER.Serializer()
            try serializer.serialize(certificate)
            let thumbprint = Insecure.SHA1.hash(data: serializer.serializedBytes).map { String(format: "%02X", $0) }
                .joined()
            _ = try fixture.hub.putIdentity(
                IdentityKey(deviceId: "x509-device"),
                body: [
                    "authentication": [
                        "type": "selfSigned", "x509Thumbprint": ["primaryThumbprint": .string(thumbprint)],
                    ]
                ], ifMatch: nil)
            let client = try IoTHubDeviceClient.fromX509Certificate(
                X509Credential(certificatePEM: pem, privateKeyPEM: key.pemRepresentation), hostName: "localhost",
                deviceId: "x509-device",
                configuration: fixture.configuration(over: transport))
            try await client.send(Message(payload: Data("signed".utf8)))
            #expect(fixture.telemetry.first?.deviceId == "x509-device")
            await client.shutdown()

            let stranger = P256.Signing.PrivateKey()
            let strangerCertificate = try Certificate(
                version: .v3, serialNumber: .init(), publicKey: .init(stranger.publicKey),
                notValidBefore: Date().addingTimeInterval(-60),
                notValidAfter: Date().addingTimeInterval(3600), issuer: name, subject: name,
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: .init(), issuerPrivateKey: .init(stranger))
            let impostor = try IoTHubDeviceClient.fromX509Certificate(
                X509Credential(
                    certificatePEM: try strangerCertificate.serializeAsPEM().pemString,
                    privateKeyPEM: stranger.pemRepresentation),
                hostName: "localhost", deviceId: "x509-device", configuration: fixture.configuration(over: transport))
            await #expect(throws: IoTHubError.self) { try await impostor.connect() }
            await impostor.shutdown()
        }
    }

    @Test func shutdownDuringAPendingSendCancelsIt() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client()
            try await client.connect()
            fixture.hub.setFaults(Faults(acknowledgementDelayMilliseconds: 3000))
            let pending = sendInBackground(client, Message(payload: Data("slow".utf8)))
            try await Task.sleep(for: .milliseconds(200))
            await client.shutdown()
            let error = await pending.value
            #expect(error?.code == "OperationCancelled")
            do {
                try await client.send(Message())
                Issue.record("sent after shutdown")
            } catch {
                #expect((error as? IoTHubError)?.code == "ClientError", "\(error)")
            }
        }
    }

    @Test(arguments: Transport.allCases) func aSASTokenClientUpdatesItsToken(over transport: Transport) async throws {
        try await HubFixture.with { fixture in
            let key = try #require(fixture.hub.identity(IdentityKey(deviceId: "dev1"))?.authentication.primaryKey)
            let token = try SASToken(resourceURI: "localhost/devices/dev1", key: key, timeToLive: 600)
            let client = try IoTHubDeviceClient.fromSASToken(
                token.string, configuration: fixture.configuration(over: transport))
            try await client.send(Message(payload: Data("one".utf8)))
            let fresh = try SASToken(resourceURI: "localhost/devices/dev1", key: key, timeToLive: 1200)
            try await client.updateSASToken(fresh.string)
            try await client.send(Message(payload: Data("two".utf8)))
            #expect(fixture.telemetry.count == 2)
            #expect(client.status.tokenExpiry == fresh.expiryDate)
            let otherDevice = try SASToken(resourceURI: "localhost/devices/dev2", key: key, timeToLive: 600)
            await #expect(throws: IoTHubError.self) { try await client.updateSASToken(otherDevice.string) }
            let expired = try SASToken(resourceURI: "localhost/devices/dev1", key: key, expiry: 1000)
            await #expect(throws: IoTHubError.self) { try await client.updateSASToken(expired.string) }
            await client.shutdown()

            let keyClient = try fixture.client(over: transport)
            do {
                try await keyClient.updateSASToken(fresh.string)
                Issue.record("a key-based client accepted a token")
            } catch {
                #expect((error as? IoTHubError)?.code == "ClientError", "\(error)")
            }
            await keyClient.shutdown()
        }
    }

    @Test func fileUploadThroughTheHubsHTTPSAPI() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client()
            let info = try await client.storageInfo(forBlob: "logs/today.txt")
            #expect(info.blobName == "dev1/logs/today.txt")
            #expect(info.hostName == "localhost:\(fixture.ports.blob)")
            // Upload with curl, as an application would with any HTTP client.
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("upload-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let ca = directory.appendingPathComponent("ca.pem")
            try Data(fixture.localHub.caCertificatePEM.utf8).write(to: ca)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            process.arguments = [
                "-sf", "--cacert", ca.path, "-X", "PUT", "-H", "x-ms-blob-type: BlockBlob", "--data-binary",
                "file body", info.blobURL,
            ]
            try process.run()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)
            try await client.notifyBlobUploadStatus(
                correlationId: info.correlationId, isSuccess: true, statusCode: 201, statusDescription: "uploaded")
            #expect(
                fixture.hub.blobs.get(container: info.containerName, blob: info.blobName)?.data
                    == Data("file body".utf8))
            let notification = fixture.hub.fileUploadNotifications.read(after: 0, limit: 10).entries.first?.entry
            #expect(notification?.isSuccess == true)
            #expect(notification?.statusCode == 201)
            do {
                try await client.notifyBlobUploadStatus(
                    correlationId: "unknown", isSuccess: false, statusCode: 500, statusDescription: "")
                Issue.record("an unknown correlation id was accepted")
            } catch {
                #expect((error as? IoTHubError)?.code == "ServiceError", "\(error)")
            }
            await client.shutdown()
        }
    }

    @Test func aBlobNameStorageWouldMisreadIsRefusedBeforeTheHubIsAsked() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client()
            for name in ["../../x", "a/./b", "a//b", "%2e%2e/x"] {
                do {
                    _ = try await client.storageInfo(forBlob: name)
                    Issue.record("\(name) was passed on")
                } catch {
                    #expect((error as? IoTHubError)?.code == "ValueError", "\(name): \(error)")
                }
                do {
                    _ = try await client.uploadBlob(
                        named: name, length: 1,
                        body: AsyncStream {
                            $0.yield(Data("x".utf8))
                            $0.finish()
                        })
                    Issue.record("\(name) was uploaded")
                } catch {
                    #expect((error as? IoTHubError)?.code == "ValueError", "\(name): \(error)")
                }
            }
            #expect(fixture.hub.state.withLockedValue { $0.fileUploads.isEmpty })
            await client.shutdown()
        }
    }

    /// After `shutdown` every operation throws `ClientError`, as the Python SDK's do.
    /// Three listeners started while the hub cannot be reached share one connect attempt, and
    /// its failure is one background error (it was one per listener, and the sidecar, which
    /// starts three, logged each failure three times).
    @Test func listenersStartedWhileTheHubIsUnreachableReportTheFailureOnce() async throws {
        let closed = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(
            host: "127.0.0.1", port: 0
        ).get()
        let port = try #require(closed.localAddress?.port)
        try await closed.close()
        try await HubFixture.with { fixture in
            let client = try fixture.client {
                $0.mqttPort = port
                $0.connectionRetry = false
            }
            var errors = client.backgroundErrors().makeAsyncIterator()
            // Kept: a listener that goes before the connect would need nothing connected.
            let listeners = (client.messages(), client.methodRequests(), client.desiredPropertiesPatches())
            let first = await errors.next()
            #expect(first?.code == "ConnectionFailedError", "\(String(describing: first))")
            await client.shutdown()  // ends the stream
            _ = listeners
            var more: [IoTHubError] = []
            while let error = await errors.next() { more.append(error) }
            #expect(more.isEmpty, "\(more)")
        }
    }

    @Test func everyOperationThrowsClientErrorAfterShutdown() async throws {
        try await HubFixture.with { fixture in
            let key = try #require(fixture.hub.identity(IdentityKey(deviceId: "dev1"))?.authentication.primaryKey)
            let token = try SASToken(resourceURI: "localhost/devices/dev1", key: key, timeToLive: 600)
            let client = try IoTHubDeviceClient.fromSASToken(token.string, configuration: fixture.configuration())
            try await client.connect()
            let info = try await client.storageInfo(forBlob: "before-shutdown.txt")
            await client.shutdown()
            let shutDown = IoTHubError.clientError("the client has been shut down")
            func expectShutDown(_ operation: String, _ body: () async throws -> Void) async {
                do {
                    try await body()
                    Issue.record("\(operation) worked after shutdown")
                } catch {
                    #expect(error as? IoTHubError == shutDown, "\(operation): \(error)")
                }
            }
            await expectShutDown("connect") { try await client.connect() }
            await expectShutDown("send") { try await client.send(Message(payload: Data("x".utf8))) }
            await expectShutDown("send to an output") { try await client.send(Message(), toOutput: "out") }
            await expectShutDown("send a batch") {
                try await client.send([Message(), Message(payload: Data(count: Message.maximumSize + 1))]).forEach {
                    try $0.get()
                }
            }
            await expectShutDown("respond") { try await client.respond(MethodResponse(requestId: "1", status: 200)) }
            await expectShutDown("twin") { _ = try await client.twin() }
            await expectShutDown("updateReportedProperties") {
                try await client.updateReportedProperties(["a": .integer(1)])
            }
            await expectShutDown("storageInfo") { _ = try await client.storageInfo(forBlob: "after-shutdown.txt") }
            await expectShutDown("notifyBlobUploadStatus") {
                try await client.notifyBlobUploadStatus(
                    correlationId: info.correlationId, isSuccess: true, statusCode: 201, statusDescription: "")
            }
            await expectShutDown("uploadBlob") {
                _ = try await client.uploadBlob(
                    named: "after-shutdown.txt", length: 1,
                    body: AsyncStream {
                        $0.yield(Data("x".utf8))
                        $0.finish()
                    })
            }
            let fresh = try SASToken(resourceURI: "localhost/devices/dev1", key: key, timeToLive: 1200)
            await expectShutDown("updateSASToken") { try await client.updateSASToken(fresh.string) }
            #expect(fixture.hub.fileUploadNotifications.read(after: 0, limit: 10).entries.isEmpty)
        }
    }

    /// The network thread sends PINGREQs while nothing else is sent: the hub, which drops a
    /// client silent for 1.5 keep-alive periods, keeps the connection.
    @Test(arguments: Transport.allCases) func anIdleConnectionIsKeptAliveByPings(over transport: Transport) async throws
    {
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: transport) { $0.keepAlive = 5 }
            try await client.connect()
            let connectedSince = client.status.since
            try await Task.sleep(for: .seconds(9))
            #expect(client.status.state == .connected)
            #expect(
                client.status.since == connectedSince, "the connection was made again: the hub dropped an idle client")
            try await client.send(Message(payload: Data("after a quiet spell".utf8)))
            await client.shutdown()
        }
    }

    /// A hub whose certificate is not trusted fails the connect with a ConnectionFailedError that
    /// says so, not with an OperationTimeout once the CONNACK wait is over (libmosquitto closes
    /// the socket after a failed handshake without calling its disconnect callback).
    @Test(arguments: Transport.allCases) func anUntrustedHubCertificateFailsTheConnectWithTheReason(
        over transport: Transport
    ) async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client(over: transport) {
                $0.serverVerificationCertificate = nil
                $0.operationTimeout = .seconds(60)
            }
            do {
                try await client.connect()
                Issue.record("connected to a hub whose certificate is not trusted")
            } catch {
                #expect((error as? IoTHubError)?.code == "ConnectionFailedError", "\(error)")
                #expect("\(error)".lowercased().contains("certificate"), "\(error)")
            }
            await client.shutdown()
        }
    }

    @Test func invalidArgumentsFailAtCreation() throws {
        let key = Data(repeating: 5, count: 32).base64EncodedString()
        #expect(throws: IoTHubError.self) { try IoTHubDeviceClient.fromConnectionString("HostName=h;DeviceId=d") }
        #expect(throws: IoTHubError.self) {
            try IoTHubDeviceClient.fromConnectionString("HostName=h;DeviceId=d;x509=true")
        }
        #expect(throws: IoTHubError.self) {
            try IoTHubDeviceClient.fromSymmetricKey("not base64", hostName: "h", deviceId: "d")
        }
        #expect(throws: IoTHubError.self) {
            try IoTHubDeviceClient.fromSymmetricKey(
                key, hostName: "h", deviceId: "d", configuration: .init(keepAlive: 0))
        }
        // libmosquitto refuses a keep-alive under 5 s at connect; the client says so at creation.
        #expect(throws: IoTHubError.self) {
            try IoTHubDeviceClient.fromSymmetricKey(
                key, hostName: "h", deviceId: "d", configuration: .init(keepAlive: 4))
        }
        #expect(throws: IoTHubError.self) {
            try IoTHubDeviceClient.fromSymmetricKey(
                key, hostName: "h", deviceId: "d", configuration: .init(keepAlive: 1741))
        }
        #expect(throws: IoTHubError.self) {
            try IoTHubDeviceClient.fromSymmetricKey(
                key, hostName: "h", deviceId: "d", configuration: .init(cipher: "NOT-A-CIPHER"))
        }
        #expect(throws: IoTHubError.self) {
            try IoTHubDeviceClient.fromSymmetricKey(
                key, hostName: "h", deviceId: "d", configuration: .init(serverVerificationCertificate: "junk"))
        }
        #expect(throws: IoTHubError.self) {
            try IoTHubDeviceClient.fromSASToken("SharedAccessSignature sr=h%2Fdevices%2Fd&sig=x&se=1000")
        }
        #expect(throws: IoTHubError.self) {
            try IoTHubDeviceClient.fromSASToken("SharedAccessSignature sr=h%2Fsomething&sig=x&se=99999999999")
        }
        let module = try IoTHubDeviceClient.fromConnectionString(
            "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=\(key)")
        #expect(module.moduleId == "m")
    }
}

@Suite(.serialized, .timeLimit(.minutes(3))) struct DeviceClientCancellationTests {
    @Test func cancellingAWaitingSendEndsItWithOperationCancelled() async throws {
        try await HubFixture.with { fixture in
            let client = try fixture.client()
            try await client.connect()
            fixture.hub.setFaults(Faults(acknowledgementDelayMilliseconds: 2000))
            let pending = sendInBackground(client, Message(payload: Data("slow".utf8)))
            try await Task.sleep(for: .milliseconds(200))
            let start = ContinuousClock.now
            pending.cancel()
            let error = await pending.value
            #expect(error?.code == "OperationCancelled")
            #expect(ContinuousClock.now - start < .seconds(1), "cancellation does not wait for the acknowledgement")
            fixture.hub.setFaults(Faults())
            try await client.send(Message(payload: Data("after".utf8)))
            await client.shutdown()
        }
    }
}

@Suite(.serialized, .timeLimit(.minutes(3))) struct DeviceClientRetryTests {
    @Test func revokedCredentialsEndTheReconnectLoop() async throws {
        try await HubFixture.with { fixture in
            let key = IdentityKey(deviceId: "dev1")
            let client = try fixture.client()
            let states = client.connectionStateChanges()
            try await client.connect()
            // New keys end the connection (like IoT Hub) and make the client's key wrong.
            _ = try fixture.hub.putIdentity(
                key, body: ["deviceId": "dev1", "authentication": ["type": "sas"]], ifMatch: "*")
            var sawReconnecting = false
            var final: ConnectionStateChange?
            for await change in states {
                if change.state == .reconnecting { sawReconnecting = true }
                if change.state == .disconnected {
                    final = change
                    break
                }
            }
            #expect(sawReconnecting)
            #expect(final?.reason?.code == "CredentialError")
            let attempts = fixture.hub.state.withLockedValue { $0.connectAttempts }
            try await Task.sleep(for: .milliseconds(800))  // four retry intervals
            #expect(
                fixture.hub.state.withLockedValue { $0.connectAttempts } == attempts,
                "no retry after refused credentials")
            #expect(!client.isConnected)
            await client.shutdown()
        }
    }
}

@Suite(.serialized, .timeLimit(.minutes(3))) struct DeviceClientReconnectTests {
    @Test func connectDuringAReconnectWaitsForItInsteadOfRacingIt() async throws {
        try await HubFixture.with { fixture in
            let key = IdentityKey(deviceId: "dev1")
            let client = try fixture.client { $0.connectionRetryInterval = .milliseconds(300) }
            try await client.connect()
            fixture.hub.setFaults(Faults(refuseConnectionsUntil: Date().addingTimeInterval(0.5)))
            _ = fixture.hub.dropConnection(of: key)
            #expect(await HubFixture.eventually { client.status.state == .reconnecting })
            try await client.connect()
            #expect(client.isConnected)
            #expect(fixture.hub.isConnected(key))
            try await client.send(Message(payload: Data("after".utf8)))
            #expect(fixture.telemetry.count == 1)
            await client.shutdown()
            #expect(await HubFixture.eventually { !fixture.hub.isConnected(key) })
        }
    }

    /// `connection_retry=False`: after a drop the client stays disconnected; the hub sees no
    /// further CONNECT.
    @Test func withoutConnectionRetryADropIsNotFollowedByAnAttempt() async throws {
        try await HubFixture.with { fixture in
            let key = IdentityKey(deviceId: "dev1")
            let client = try fixture.client {
                $0.connectionRetry = false
                $0.connectionRetryInterval = .milliseconds(100)
            }
            try await client.connect()
            let attempts = fixture.hub.state.withLockedValue { $0.connectAttempts }
            _ = fixture.hub.dropConnection(of: key)
            #expect(await HubFixture.eventually { client.status.state == .disconnected })
            // Ten retry intervals go by.
            try await Task.sleep(for: .seconds(1))
            #expect(client.status.state == .disconnected)
            #expect(client.reconnectionAttempts == 0)
            #expect(!fixture.hub.isConnected(key))
            #expect(fixture.hub.state.withLockedValue { $0.connectAttempts } == attempts)
            await client.shutdown()
        }
    }

    /// `ensure_desired_properties`: desired properties changed while the client was away
    /// arrive after the reconnect (the whole desired document, with its `$version`); switched
    /// off, they do not.
    @Test(arguments: [true, false]) func desiredPropertiesChangedWhileAwayArriveOnlyWithEnsureDesiredProperties(
        ensure: Bool
    ) async throws {
        try await HubFixture.with { fixture in
            let key = IdentityKey(deviceId: "dev1")
            let client = try fixture.client {
                $0.ensureDesiredProperties = ensure
                $0.connectionRetryInterval = .seconds(1)
            }
            let patches = client.desiredPropertiesPatches()
            // Subscribed, and the version of the first twin read is known.
            #expect(await HubFixture.eventually { client.lastDesiredVersion.withLockedValue { $0 } != nil })
            // Away while the change is made: the hub refuses the client until it is done.
            fixture.hub.setFaults(Faults(refuseConnectionsUntil: .distantFuture))
            _ = fixture.hub.dropConnection(of: key)
            #expect(await HubFixture.eventually { !fixture.hub.isConnected(key) })
            _ = try fixture.hub.patchDesired(key, patch: ["mode": "away"], tags: nil, replace: false, ifMatch: nil)
            try #require(!fixture.hub.isConnected(key), "the client came back before the change: it was not away")
            fixture.hub.setFaults(Faults())
            #expect(await HubFixture.eventually { client.isConnected })
            let patch = await first(of: patches, timeout: .seconds(ensure ? 10 : 2))
            if ensure {
                #expect(patch?["mode"] == "away")
                #expect(patch?["$version"] == 2)
            } else {
                #expect(patch == nil, "\(String(describing: patch))")
            }
            await client.shutdown()
        }
    }

    /// `on_new_sastoken_required`: a token the application supplied that expires within 120 s
    /// asks for a new one.
    @Test func aSuppliedTokenAboutToExpireAsksForANewOne() async throws {
        try await HubFixture.with { fixture in
            let key = try #require(fixture.hub.identity(IdentityKey(deviceId: "dev1"))?.authentication.primaryKey)
            let token = try SASToken(resourceURI: "localhost/devices/dev1", key: key, timeToLive: 125)
            let client = try IoTHubDeviceClient.fromSASToken(token.string, configuration: fixture.configuration())
            let requests = client.newSASTokenRequired()
            try await client.connect()
            #expect(await first(of: requests, timeout: .seconds(30)) != nil)
            let lasting = try SASToken(resourceURI: "localhost/devices/dev1", key: key, timeToLive: 3600)
            let laterRequests = client.newSASTokenRequired()
            try await client.updateSASToken(lasting.string)
            #expect(
                await first(of: laterRequests, timeout: .seconds(2)) == nil, "a lasting token was asked to be replaced")
            try await client.send(Message(payload: Data("with the new token".utf8)))
            await client.shutdown()
        }
    }

    /// Every attempt made while reconnecting is counted, refused ones too; the first connect is not.
    @Test func reconnectionAttemptsAreCounted() async throws {
        try await HubFixture.with { fixture in
            let key = IdentityKey(deviceId: "dev1")
            let client = try fixture.client { $0.connectionRetryInterval = .milliseconds(200) }
            try await client.connect()
            #expect(client.reconnectionAttempts == 0)
            _ = fixture.hub.dropConnection(of: key)
            #expect(await HubFixture.eventually { client.reconnectionAttempts >= 1 && client.isConnected })
            let afterFirst = client.reconnectionAttempts
            // Refused until the test has seen refused attempts (however slow the machine): more
            // attempts for the next reconnection.
            fixture.hub.setFaults(Faults(refuseConnectionsUntil: Date().addingTimeInterval(60)))
            _ = fixture.hub.dropConnection(of: key)
            // Two attempts begun means the first was refused (the second may be the one that works).
            #expect(await HubFixture.eventually { client.reconnectionAttempts >= afterFirst + 2 })
            fixture.hub.setFaults(Faults())
            #expect(await HubFixture.eventually { client.isConnected })
            #expect(client.reconnectionAttempts >= afterFirst + 2, "\(client.reconnectionAttempts) attempts")
            await client.shutdown()
        }
    }
}
