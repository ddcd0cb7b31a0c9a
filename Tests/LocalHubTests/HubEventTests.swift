import Foundation
import IoTHubProtocol
import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import LocalHub

/// The hub's own events (twin changes, identity lifecycle, connection state) on the built-in
/// endpoint, as IoT Hub shapes them, and the routes that decide which of them are kept.
@Suite struct HubEventTests {
    static func makeHub(routing sources: Set<MessageSource> = Set(MessageSource.events)) throws -> Hub {
        let hub = Hub(
            hostName: "myhub.azure-devices.net", ownerPolicyKey: IdentityAuthentication.randomKey(),
            logger: Logger(label: "test"))
        _ = try hub.ensureDevice("dev1")
        hub.setRoutedEventSources(sources)
        return hub
    }

    static func events(_ hub: Hub, after cursor: UInt64 = 0) -> [TelemetryRecord] {
        hub.telemetry.read(after: cursor, limit: 1000).entries.map(\.entry)
    }

    static func body(_ record: TelemetryRecord) throws -> JSONValue {
        try JSONValue(parsing: record.message.payload)
    }

    @Test func eventsAreKeptOnlyForRoutedSources() throws {
        let hub = try Self.makeHub(routing: [])
        #expect(hub.routedEventSources.isEmpty)
        _ = try hub.patchDesired(
            IdentityKey(deviceId: "dev1"), patch: ["a": 1], tags: nil, replace: false, ifMatch: nil)
        _ = try hub.ensureDevice("dev2")
        #expect(Self.events(hub).isEmpty, "IoT Hub's fallback route carries device messages only")

        hub.setRoutedEventSources([.twinChangeEvents, .telemetry])
        #expect(hub.routedEventSources == [.twinChangeEvents])
        _ = try hub.patchDesired(
            IdentityKey(deviceId: "dev1"), patch: ["a": 2], tags: nil, replace: false, ifMatch: nil)
        _ = try hub.ensureDevice("dev3")
        #expect(Self.events(hub).map(\.source) == [.twinChangeEvents])
    }

    @Test func desiredUpdatesAndReplacesAreNotifiedLikeIoTHub() throws {
        let hub = try Self.makeHub()
        let key = IdentityKey(deviceId: "dev1")
        let start = hub.telemetry.lastSequenceNumber
        let updated = try hub.patchDesired(
            key, patch: ["fan": 2, "$version": 99], tags: ["room": "a"], replace: false, ifMatch: nil)
        let update = try #require(Self.events(hub, after: start).first)
        #expect(update.source == .twinChangeEvents)
        #expect(update.deviceId == "dev1" && update.moduleId == nil)
        #expect(update.message.properties["hubName"] == "myhub")
        #expect(update.message.properties["deviceId"] == "dev1")
        #expect(update.message.properties["iothub-message-schema"] == "twinChangeNotification")
        #expect(update.message.properties["opType"] == "updateTwin")
        #expect(
            update.message.properties["operationTimestamp"].flatMap {
                ISO8601DateFormatter.withFractionalSeconds.date(from: $0)
            } != nil)
        #expect(update.message.contentType == "application/json" && update.message.contentEncoding == "utf-8")
        #expect(update.message.userId == "myhub")
        #expect(
            try Self.body(update) == [
                "version": .integer(Int64(updated.twinVersion)), "tags": ["room": "a"],
                "properties": ["desired": ["fan": 2, "$version": .integer(Int64(updated.desired.version))]],
            ])

        let tagged = try hub.patchDesired(key, patch: [:], tags: ["floor": 1], replace: false, ifMatch: nil)
        #expect(
            try Self.body(try #require(Self.events(hub, after: start).last)) == [
                "version": .integer(Int64(tagged.twinVersion)), "tags": ["floor": 1],
            ])

        let replaced = try hub.patchDesired(
            key, patch: ["mode": "eco"], tags: ["site": "b"], replace: true, ifMatch: nil)
        let replace = try #require(Self.events(hub, after: start).last)
        #expect(replace.message.properties["opType"] == "replaceTwin")
        #expect(
            try Self.body(replace) == [
                "deviceId": "dev1", "etag": .string(replaced.twinEtag),
                "version": .integer(Int64(replaced.twinVersion)), "tags": ["site": "b"],
                "properties": ["desired": replaced.desired.json, "reported": replaced.reported.json],
            ])
        #expect(Self.events(hub, after: start).count == 3)
    }

    @Test func reportedPatchesAreNotifiedWithTheirVersions() throws {
        let hub = try Self.makeHub()
        let key = IdentityKey(deviceId: "dev1")
        let connection = DeviceConnection(id: 1, key: key, transport: .tcp, channel: EmbeddedChannel())
        _ = hub.attach(connection, cleanSession: true)
        let start = hub.telemetry.lastSequenceNumber
        hub.handleTwinRequest(
            from: connection, TwinRequestTopic(.patchReportedProperties, requestId: "1"),
            payload: ByteBuffer(string: #"{"t":21,"gone":null}"#))
        hub.handleTwinRequest(
            from: connection, TwinRequestTopic(.patchReportedProperties, requestId: "2"),
            payload: ByteBuffer(string: "[1]"))
        hub.handleTwinRequest(from: connection, TwinRequestTopic(.get, requestId: "3"), payload: ByteBuffer())
        let events = Self.events(hub, after: start)
        #expect(events.count == 1, "a refused patch and a GET change nothing")
        let record = try #require(hub.identity(key))
        #expect(
            try Self.body(try #require(events.first)) == [
                "version": .integer(Int64(record.twinVersion)),
                "properties": [
                    "reported": ["t": 21, "gone": nil, "$version": .integer(Int64(record.reported.version))]
                ],
            ])
        #expect(events.first?.message.properties["opType"] == "updateTwin")
    }

    @Test func lifecycleAndConnectionStateEventsFollowTheRegistryAndSessions() throws {
        let hub = try Self.makeHub()
        let start = hub.telemetry.lastSequenceNumber
        _ = try hub.putIdentity(IdentityKey(deviceId: "dev2"), body: [:], ifMatch: nil)
        _ = try hub.putIdentity(IdentityKey(deviceId: "dev2"), body: ["status": "enabled"], ifMatch: "*")
        let module = IdentityKey(deviceId: "dev2", moduleId: "m1")
        _ = try hub.putIdentity(module, body: [:], ifMatch: nil)
        let first = DeviceConnection(id: 1, key: module, transport: .tcp, channel: EmbeddedChannel())
        _ = hub.attach(first, cleanSession: true)
        let second = DeviceConnection(id: 2, key: module, transport: .tcp, channel: EmbeddedChannel())
        _ = hub.attach(second, cleanSession: true)
        hub.detach(first)  // replaced already: no second disconnection
        try hub.deleteIdentity(IdentityKey(deviceId: "dev2"), ifMatch: nil)

        let events = Self.events(hub, after: start)
        let summary = events.map {
            "\($0.source.rawValue) \($0.message.properties["opType"] ?? "") \($0.moduleId ?? "-")"
        }
        #expect(
            summary == [
                "deviceLifecycleEvents createDeviceIdentity -",
                "deviceLifecycleEvents createDeviceIdentity m1",
                "deviceConnectionStateEvents deviceConnected m1",
                "deviceConnectionStateEvents deviceDisconnected m1",
                "deviceConnectionStateEvents deviceConnected m1",
                "deviceConnectionStateEvents deviceDisconnected m1",
                "deviceLifecycleEvents deleteDeviceIdentity m1",
                "deviceLifecycleEvents deleteDeviceIdentity -",
            ])
        #expect(events[1].message.properties["moduleId"] == "m1")
        #expect(events[1].message.properties["iothub-message-schema"] == "deviceLifecycleNotification")
        #expect(
            try Self.body(events[0]) == [
                "deviceId": "dev2", "etag": .string(IdentityRecord.etag(1)), "version": 1,
                "properties": ["desired": ["$version": 1], "reported": ["$version": 1]],
            ])
        #expect(try Self.body(events[1])["moduleId"] == "m1")
        let sequenceNumbers = try events[2...5].map {
            try #require(Self.body($0)["sequenceNumber"].flatMap(RegistryJSON.stringValue))
        }
        #expect(sequenceNumbers.allSatisfy { $0.count == 64 && $0.allSatisfy(\.isHexDigit) })
        #expect(sequenceNumbers == sequenceNumbers.sorted() && Set(sequenceNumbers).count == 4)
        #expect(events[2].message.properties["iothub-message-schema"] == "deviceConnectionStateNotification")
    }

    @Test func connectionStateSequenceNumbersGrowAcrossRestarts() {
        let earlier = Hub(
            hostName: "h", ownerPolicyKey: IdentityAuthentication.randomKey(), logger: Logger(label: "test"),
            now: Date(timeIntervalSince1970: 1_700_000_000))
        let later = Hub(
            hostName: "h", ownerPolicyKey: IdentityAuthentication.randomKey(), logger: Logger(label: "test"),
            now: Date(timeIntervalSince1970: 1_700_000_001))
        var state = Hub.State()
        let many = (0..<1000).map { _ in earlier.nextConnectionStateSequenceNumber(in: &state) }.last ?? ""
        var fresh = Hub.State()
        #expect(later.nextConnectionStateSequenceNumber(in: &fresh) > many)
    }

    @Test func routesAreKeptInThePersistedState() throws {
        let hub = try Self.makeHub(routing: [.deviceLifecycleEvents])
        let snapshot = hub.snapshot()
        #expect(snapshot.routedEventSources == [.deviceLifecycleEvents])
        let data = try JSONEncoder().encode(snapshot)
        let restored = Hub(
            hostName: "h", ownerPolicyKey: IdentityAuthentication.randomKey(),
            persistedState: try JSONDecoder().decode(PersistedState.self, from: data),
            routedEventSources: [.twinChangeEvents], logger: Logger(label: "test"))
        #expect(restored.routedEventSources == [.deviceLifecycleEvents, .twinChangeEvents])
        let older = try JSONDecoder().decode(
            PersistedState.self, from: Data(#"{"formatVersion":1,"identities":[]}"#.utf8))
        #expect(older.routedEventSources == nil)
    }
}

extension ISO8601DateFormatter {
    static var withFractionalSeconds: ISO8601DateFormatter {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }
}
