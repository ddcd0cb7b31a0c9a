import Foundation
import IoTHubProtocol
import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import LocalHub

/// The hub's rules without sockets: authentication, sessions, twins, queues.
@Suite struct HubStateTests {
    static func makeHub() throws -> Hub {
        let hub = Hub(
            hostName: "localhost", ownerPolicyKey: IdentityAuthentication.randomKey(), logger: Logger(label: "test"))
        _ = try hub.ensureDevice("dev1")
        return hub
    }

    static func credentials(_ hub: Hub, clientId: String = "dev1", token: SASToken? = nil, username: String? = nil)
        throws -> ConnectCredentials
    {
        let key = try #require(hub.identity(IdentityKey(deviceId: "dev1"))?.authentication.primaryKey)
        let token = try token ?? SASToken(resourceURI: "localhost/devices/dev1", key: key, timeToLive: 600)
        return ConnectCredentials(
            clientId: clientId, username: username ?? "localhost/\(clientId)/?api-version=2019-10-01",
            password: ByteBuffer(string: token.string), clientCertificateDER: nil)
    }

    @Test func authenticationFollowsIoTHubsRules() throws {
        let hub = try Self.makeHub()
        let key = try #require(hub.identity(IdentityKey(deviceId: "dev1"))?.authentication.primaryKey)
        let secondary = try #require(hub.identity(IdentityKey(deviceId: "dev1"))?.authentication.secondaryKey)

        guard case .success(let (identity, expiry)) = hub.authenticate(try Self.credentials(hub)) else {
            Issue.record("a valid token was refused")
            return
        }
        #expect(identity == IdentityKey(deviceId: "dev1"))
        #expect(expiry != nil)
        let withSecondary = try SASToken(resourceURI: "localhost/devices/dev1", key: secondary, timeToLive: 600)
        #expect(try hub.authenticate(Self.credentials(hub, token: withSecondary)).isSuccess)

        let cases: [(ConnectCredentials, ConnackPacket.ReturnCode)] = [
            (try Self.credentials(hub, clientId: "a/b/c"), .identifierRejected),
            (try Self.credentials(hub, username: "otherhub/dev1/?api-version=2019-10-01"), .badUsernameOrPassword),
            (try Self.credentials(hub, username: "localhost/dev2/?"), .badUsernameOrPassword),
            (
                try Self.credentials(
                    hub, token: SASToken(resourceURI: "localhost/devices/dev1", key: key, expiry: 1000)), .notAuthorized
            ),
            (
                try Self.credentials(
                    hub, token: SASToken(resourceURI: "localhost/devices/dev2", key: key, timeToLive: 600)),
                .notAuthorized
            ),
            (
                try Self.credentials(
                    hub,
                    token: SASToken(
                        resourceURI: "localhost/devices/dev1", key: IdentityAuthentication.randomKey(), timeToLive: 600)
                ), .notAuthorized
            ),
            (
                try Self.credentials(
                    hub,
                    token: SASToken(resourceURI: "localhost/devices/dev1", key: key, timeToLive: 600, keyName: "owner")),
                .notAuthorized
            ),
            (try Self.credentials(hub, clientId: "ghost", username: "localhost/ghost/?"), .notAuthorized),
        ]
        for (credentials, expected) in cases {
            if case .failure(let code) = hub.authenticate(credentials) {
                #expect(code == expected, "\(credentials.clientId) \(credentials.username ?? "")")
            } else {
                Issue.record("accepted \(credentials.clientId) \(credentials.username ?? "")")
            }
        }
        var noPassword = try Self.credentials(hub)
        noPassword.password = nil
        #expect(hub.authenticate(noPassword).failureCode == .badUsernameOrPassword)
    }

    @Test func disabledDevicesAndRefusalFaultsAreRefused() throws {
        let hub = try Self.makeHub()
        hub.setFaults(Faults(refuseConnectionsUntil: Date().addingTimeInterval(60)))
        #expect(try hub.authenticate(Self.credentials(hub)).failureCode == .serverUnavailable)
        hub.setFaults(Faults())
        _ = try hub.putIdentity(
            IdentityKey(deviceId: "dev1"), body: ["deviceId": "dev1", "status": "disabled"], ifMatch: "*")
        #expect(try hub.authenticate(Self.credentials(hub)).failureCode == .notAuthorized)
    }

    @Test func registryEtagsFollowIoTHub() throws {
        let hub = try Self.makeHub()
        let key = IdentityKey(deviceId: "dev1")
        #expect(throws: ServiceError.conflict("dev1 already exists")) {
            try hub.putIdentity(key, body: ["deviceId": "dev1"], ifMatch: nil)
        }
        let etag = try #require(hub.identity(key)?.etag)
        #expect(throws: ServiceError.self) {
            try hub.putIdentity(key, body: ["deviceId": "dev1"], ifMatch: "\"bogus\"")
        }
        let updated = try hub.putIdentity(key, body: ["deviceId": "dev1"], ifMatch: "\"\(etag)\"")
        #expect(updated.etag != etag)
        #expect(throws: ServiceError.badRequest("deviceId 'other' in the body does not match 'dev1' in the path")) {
            try hub.putIdentity(key, body: ["deviceId": "other"], ifMatch: "*")
        }
        #expect(throws: ServiceError.self) {
            try hub.putIdentity(IdentityKey(deviceId: "bad/id"), body: [:], ifMatch: nil)
        }
        #expect(throws: ServiceError.notFound(IdentityKey(deviceId: "nodevice"))) {
            try hub.putIdentity(IdentityKey(deviceId: "nodevice", moduleId: "m"), body: [:], ifMatch: nil)
        }
        let module = try hub.putIdentity(IdentityKey(deviceId: "dev1", moduleId: "m1"), body: [:], ifMatch: nil)
        #expect(module.authentication.primaryKey != nil)
        try hub.deleteIdentity(key, ifMatch: nil)
        #expect(
            hub.identity(IdentityKey(deviceId: "dev1", moduleId: "m1")) == nil, "deleting a device deletes its modules")
    }

    @Test func x509IdentitiesNeedAThumbprint() throws {
        let hub = try Self.makeHub()
        #expect(throws: ServiceError.self) {
            try hub.putIdentity(
                IdentityKey(deviceId: "x"), body: ["authentication": ["type": "selfSigned"]], ifMatch: nil)
        }
        let record = try hub.putIdentity(
            IdentityKey(deviceId: "x"),
            body: ["authentication": ["type": "selfSigned", "x509Thumbprint": ["primaryThumbprint": "AB"]]],
            ifMatch: nil)
        #expect(record.authentication.primaryKey == nil)
        #expect(record.authentication.type == .selfSigned)
    }

    @Test func desiredPatchesMergeAndVersion() throws {
        let hub = try Self.makeHub()
        let key = IdentityKey(deviceId: "dev1")
        var record = try hub.patchDesired(
            key, patch: ["a": 1, "b": ["c": 2]], tags: ["site": "x"], replace: false, ifMatch: nil)
        #expect(record.desired.version == 2)
        #expect(record.desired.properties == ["a": 1, "b": ["c": 2]])
        record = try hub.patchDesired(key, patch: ["a": nil, "b": ["d": 3]], tags: nil, replace: false, ifMatch: "*")
        #expect(record.desired.properties == ["b": ["c": 2, "d": 3]])
        #expect(record.desired.version == 3)
        #expect(record.tags == ["site": "x"])
        record = try hub.patchDesired(key, patch: ["z": true], tags: [:], replace: true, ifMatch: nil)
        #expect(record.desired.properties == ["z": true])
        #expect(record.desired.version == 4)
        #expect(throws: ServiceError.self) {
            try hub.patchDesired(key, patch: ["q": 1], tags: nil, replace: false, ifMatch: "\"stale\"")
        }
        let big = JSONValue.string(String(repeating: "x", count: 40_000))
        #expect(throws: ServiceError.badRequest("the desired properties exceed 32 KB")) {
            try hub.patchDesired(key, patch: ["big": big], tags: nil, replace: false, ifMatch: nil)
        }
    }

    @Test func cloudToDeviceQueueKeepsIoTHubsLimitsAndPurges() throws {
        let hub = try Self.makeHub()
        for index in 0..<Hub.cloudToDeviceQueueLimit {
            _ = try hub.enqueueCloudToDevice(
                to: "dev1", message: Message(payload: Data("\(index)".utf8)), timeToLive: nil)
        }
        #expect(throws: ServiceError.self) {
            try hub.enqueueCloudToDevice(to: "dev1", message: Message(), timeToLive: nil)
        }
        #expect(try hub.purgeCloudToDevice(of: "dev1") == Hub.cloudToDeviceQueueLimit)
        let now = Date()
        _ = try hub.enqueueCloudToDevice(to: "dev1", message: Message(), timeToLive: 1, now: now)
        // An expired message leaves the queue at the next enqueue.
        _ = try hub.enqueueCloudToDevice(to: "dev1", message: Message(), timeToLive: 60, now: now.addingTimeInterval(5))
        #expect(hub.identity(IdentityKey(deviceId: "dev1"))?.cloudToDevice.count == 1)
        #expect(throws: ServiceError.notFound(IdentityKey(deviceId: "nobody"))) {
            try hub.enqueueCloudToDevice(to: "nobody", message: Message(), timeToLive: nil)
        }
    }

    @Test func sessionsKeepSubscriptionsAndRedeliverUnacknowledgedCloudToDevice() throws {
        let hub = try Self.makeHub()
        let key = IdentityKey(deviceId: "dev1")
        let first = DeviceConnection(id: 1, key: key, transport: .tcp, channel: EmbeddedChannel())
        var attach = hub.attach(first, cleanSession: false)
        #expect(!attach.sessionPresent)
        #expect(
            hub.subscribe(
                first,
                [
                    .init(topicFilter: TopicFilter.cloudToDevice(deviceId: "dev1"), qos: .exactlyOnce),
                    .init(topicFilter: "elsewhere/#", qos: .atLeastOnce),
                ]) == [1, 0x80])
        _ = try hub.enqueueCloudToDevice(to: "dev1", message: Message(payload: Data("one".utf8)), timeToLive: nil)
        let inflight = hub.state.withLockedValue { $0.sessions[key]?.inflight.count }
        #expect(inflight == 1)
        hub.detach(first)

        let second = DeviceConnection(id: 2, key: key, transport: .tcp, channel: EmbeddedChannel())
        attach = hub.attach(second, cleanSession: false)
        #expect(attach.sessionPresent)
        #expect(attach.resend.count == 1)
        guard case .publish(let again)? = attach.resend.first else {
            Issue.record("no publish resent")
            return
        }
        #expect(again.duplicate)
        let packetId = try #require(again.packetId)
        hub.acknowledge(second, packetId: packetId)
        #expect(hub.identity(key)?.cloudToDevice.isEmpty == true)

        // A clean session forgets subscriptions.
        let third = DeviceConnection(id: 3, key: key, transport: .tcp, channel: EmbeddedChannel())
        attach = hub.attach(third, cleanSession: true)
        #expect(!attach.sessionPresent)
        #expect(attach.replaced === second)
        #expect(hub.identity(key)?.subscriptions.isEmpty == true)
    }

    @Test func aConnectionWhoseTrafficIsDiscardedStaysOpenAndIsSentNothing() throws {
        let hub = try Self.makeHub()
        let key = IdentityKey(deviceId: "dev1")
        #expect(!hub.discardTraffic(of: key), "no connection yet")
        let channel = EmbeddedChannel()
        let connection = DeviceConnection(id: 1, key: key, transport: .tcp, channel: channel)
        _ = hub.attach(connection, cleanSession: true)
        _ = hub.subscribe(
            connection, [.init(topicFilter: TopicFilter.cloudToDevice(deviceId: "dev1"), qos: .atLeastOnce)])
        _ = try hub.enqueueCloudToDevice(to: "dev1", message: Message(payload: Data("before".utf8)), timeToLive: nil)
        // Cloud-to-device messages are queued on the connection's event loop.
        channel.embeddedEventLoop.run()
        #expect(try channel.readOutbound(as: MQTTPacket.self) != nil)
        #expect(hub.discardTraffic(of: key))
        #expect(connection.isDiscardingTraffic)
        _ = try hub.enqueueCloudToDevice(to: "dev1", message: Message(payload: Data("after".utf8)), timeToLive: nil)
        channel.embeddedEventLoop.run()
        #expect(try channel.readOutbound(as: MQTTPacket.self) == nil)
        #expect(hub.isConnected(key), "the connection stays open: only the client gives it up")
    }

    @Test func methodCallsToOfflineDevicesFailAtOnce() async throws {
        let hub = try Self.makeHub()
        await #expect(throws: ServiceError.deviceNotOnline(IdentityKey(deviceId: "dev1"))) {
            try await hub.invokeMethod(
                on: IdentityKey(deviceId: "dev1"), name: "m", payload: Data("null".utf8), responseTimeout: .seconds(5))
        }
    }
}

extension Result {
    var isSuccess: Bool {
        if case .success = self { return true }
        return false
    }

    var failureCode: Failure? {
        if case .failure(let failure) = self { return failure }
        return nil
    }
}
