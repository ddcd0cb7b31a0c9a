import Foundation
import IoTHubProtocol
import Logging
import NIOCore
import NIOHTTP1
import Testing

@testable import LocalHub

/// The HTTPS routes (service API, file upload, `/local`) through the router, without sockets;
/// the Python conformance suite covers them over TLS with Microsoft's SDKs.
@Suite struct ServiceAPITests {
    let hub: Hub
    let router: Router
    let owner: String

    init() throws {
        hub = Hub(
            hostName: "localhost", ownerPolicyKey: IdentityAuthentication.randomKey(), logger: Logger(label: "test"))
        router = .https(for: hub)
        owner = try SASToken(resourceURI: "localhost", key: hub.ownerPolicyKey, timeToLive: 600, keyName: "iothubowner")
            .string
    }

    func request(
        _ method: HTTPMethod, _ uri: String, json: JSONValue? = nil, body: Data? = nil,
        headers: [(String, String)] = [], authorization: String? = nil
    ) async -> (RouterResponse, JSONValue?) {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: uri)
        head.headers.add(name: "Authorization", value: authorization ?? owner)
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        let bytes = json.map { $0.encoded() } ?? body ?? Data()
        let response = await router.respond(to: RouterRequest(head: head, body: ByteBuffer(bytes: bytes)))
        guard case .buffer(let buffer) = response.body, buffer.readableBytes > 0 else { return (response, nil) }
        return (response, try? JSONValue(parsing: Data(buffer.readableBytesView)))
    }

    @Test func unauthorizedRequestsAreRefused() async throws {
        let (missing, body) = await request(.GET, "/devices/x?api-version=2021-04-12", authorization: "")
        #expect(missing.status == .unauthorized)
        #expect(
            body?["Message"].flatMap(RegistryJSON.stringValue)?.hasPrefix("ErrorCode:IotHubUnauthorizedAccess") == true)
        let wrongKey = try SASToken(
            resourceURI: "localhost", key: IdentityAuthentication.randomKey(), timeToLive: 600, keyName: "iothubowner"
        ).string
        #expect(await request(.GET, "/devices", authorization: wrongKey).0.status == .unauthorized)
        let otherHub = try SASToken(
            resourceURI: "elsewhere", key: hub.ownerPolicyKey, timeToLive: 600, keyName: "iothubowner"
        ).string
        #expect(await request(.GET, "/devices", authorization: otherHub).0.status == .unauthorized)
        let expired = try SASToken(
            resourceURI: "localhost", key: hub.ownerPolicyKey, expiry: 1000, keyName: "iothubowner"
        ).string
        #expect(await request(.GET, "/local/status", authorization: expired).0.status == .unauthorized)
    }

    @Test func deviceLifecycle() async throws {
        let (created, device) = await request(
            .PUT, "/devices/d1?api-version=2021-04-12",
            json: [
                "deviceId": "d1", "status": "enabled",
                "authentication": ["type": "sas", "symmetricKey": ["primaryKey": nil, "secondaryKey": nil]],
            ])
        #expect(created.status == .ok)
        #expect(device?["connectionState"] == "Disconnected")
        let etag = try #require(device?["etag"].flatMap(RegistryJSON.stringValue))
        #expect(
            device?["authentication"]?["symmetricKey"]?["primaryKey"].flatMap(RegistryJSON.stringValue)?.isEmpty
                == false)

        #expect(await request(.PUT, "/devices/d1", json: ["deviceId": "d1"]).0.status == .conflict)
        #expect(
            await request(.PUT, "/devices/d1", json: ["deviceId": "d1"], headers: [("If-Match", "\"nope\"")]).0.status
                == .preconditionFailed)
        #expect(
            await request(.PUT, "/devices/d1", json: ["deviceId": "d1"], headers: [("If-Match", "\"\(etag)\"")]).0
                .status == .ok)
        #expect(await request(.GET, "/devices").1?.arrayCount == 1)
        #expect(
            await request(.PUT, "/devices/d1/modules/m1", json: ["deviceId": "d1", "moduleId": "m1"]).0.status == .ok)
        #expect(await request(.GET, "/devices/d1/modules").1?.arrayCount == 1)
        #expect(await request(.DELETE, "/devices/d1").0.status == .noContent)
        let (gone, error) = await request(.GET, "/devices/d1")
        #expect(gone.status == .notFound)
        #expect(error?["errorCode"] == .integer(404001))
        #expect(await request(.GET, "/devices/d1/modules/m1").0.status == .notFound)
        #expect(await request(.PUT, "/devices/d1", body: Data("{".utf8)).0.status == .badRequest)
        #expect(await request(.GET, "/nowhere").0.status == .notFound)
        let (notAllowed, _) = await request(.POST, "/devices/d1")
        #expect(notAllowed.status == .methodNotAllowed)
        #expect(notAllowed.headers.first(name: "Allow") == "GET, PUT, DELETE")
    }

    @Test func twinsThroughTheServiceAPI() async throws {
        _ = try hub.ensureDevice("d1")
        let (patched, twin) = await request(
            .PATCH, "/twins/d1", json: ["properties": ["desired": ["fan": 2]], "tags": ["room": "a"]])
        #expect(patched.status == .ok)
        #expect(twin?["properties"]?["desired"] == ["fan": 2, "$version": 2])
        #expect(twin?["tags"] == ["room": "a"])
        #expect(
            await request(.PATCH, "/twins/d1", json: ["properties": ["reported": ["x": 1]]]).0.status == .badRequest)
        #expect(
            await request(
                .PATCH, "/twins/d1", json: ["properties": ["desired": ["fan": 3]]], headers: [("If-Match", "\"old\"")]
            ).0.status == .preconditionFailed)
        let (_, replaced) = await request(.PUT, "/twins/d1", json: ["properties": ["desired": ["mode": "eco"]]])
        #expect(replaced?["properties"]?["desired"] == ["mode": "eco", "$version": 3])
        #expect(await request(.GET, "/twins/nobody").0.status == .notFound)
    }

    @Test func methodsValidateAndReportOfflineDevices() async throws {
        _ = try hub.ensureDevice("d1")
        #expect(await request(.POST, "/twins/d1/methods", json: ["payload": 1]).0.status == .badRequest)
        #expect(
            await request(.POST, "/twins/d1/methods", json: ["methodName": "m", "responseTimeoutInSeconds": 1]).0.status
                == .badRequest)
        let (offline, error) = await request(
            .POST, "/twins/d1/methods", json: ["methodName": "m", "payload": ["a": 1]])
        #expect(offline.status == .notFound)
        #expect(error?["errorCode"] == .integer(404103))
    }

    @Test func cloudToDeviceThroughLocalAndPurge() async throws {
        _ = try hub.ensureDevice("d1")
        let (accepted, body) = await request(
            .POST, "/local/devices/d1/messages?ttl=60", body: Data("hi".utf8),
            headers: [
                ("iothub-messageid", "m1"), ("iothub-app-color", "blue"), ("iothub-ack", "full"),
                ("Content-Type", "text/plain"),
            ])
        #expect(accepted.status == .accepted)
        #expect(body?["messageId"] == "m1")
        let queued = try #require(hub.identity(IdentityKey(deviceId: "d1"))?.cloudToDevice.first)
        let bag = PropertyBag(queued.properties.map(\.entry))
        #expect(bag["$.mid"] == "m1")
        #expect(bag["iothub-ack"] == "full")
        #expect(bag["color"] == "blue")
        #expect(bag["$.ct"] == "text/plain")
        _ = await request(
            .POST, "/local/devices/d1/messages", body: Data("form".utf8),
            headers: [("Content-Type", "application/x-www-form-urlencoded")])
        let formQueued = try #require(hub.identity(IdentityKey(deviceId: "d1"))?.cloudToDevice.last)
        #expect(
            PropertyBag(formQueued.properties.map(\.entry))["$.ct"] == nil,
            "curl -d's default type is not the message's")
        #expect(
            await request(.POST, "/local/devices/d1/messages", body: Data(), headers: [("iothub-ack", "sometimes")]).0
                .status == .badRequest)
        #expect(
            await request(.POST, "/local/devices/d1/messages", body: Data(count: Message.maximumSize + 1)).0.status
                == .payloadTooLarge)
        let (_, purged) = await request(.DELETE, "/devices/d1/commands")
        #expect(purged?["totalMessagesPurged"] == 2)
    }

    @Test func telemetryLongPollReturnsWhenAMessageArrives() async throws {
        _ = try hub.ensureDevice("d1")
        let start = ContinuousClock.now
        // The poll's own timeout is long: returning before it shows the message woke the poll.
        async let poll = request(.GET, "/local/telemetry?after=0&timeout=50")
        try await Task.sleep(for: .milliseconds(100))
        hub.telemetry.append(
            TelemetryRecord(
                enqueuedTime: Date(), deviceId: "d1", message: Message(payload: Data("x".utf8), messageId: "t1"),
                rawProperties: "%24.mid=t1"),
            size: 10)
        let (response, body) = await poll
        #expect(response.status == .ok)
        #expect(ContinuousClock.now - start < .seconds(45))
        #expect(body?["messages"]?.arrayValue?.first?["messageId"] == "t1")
        #expect(body?["next"] == 1)
        let (empty, nothing) = await request(.GET, "/local/telemetry?after=1&timeout=0")
        #expect(empty.status == .ok)
        #expect(nothing?["messages"] == [])
        #expect(await request(.GET, "/local/telemetry?timeout=999").0.status == .badRequest)
    }

    @Test func routesChooseTheEventSourcesTheTelemetryLogKeeps() async throws {
        let (initial, routes) = await request(.GET, "/local/routes")
        #expect(initial.status == .ok)
        #expect(routes == ["messageSources": ["Telemetry"]])
        let (set, changed) = await request(
            .PUT, "/local/routes", json: ["messageSources": ["deviceLifecycleEvents", "Telemetry"]])
        #expect(set.status == .ok)
        #expect(changed == ["messageSources": ["Telemetry", "deviceLifecycleEvents"]])
        #expect(
            await request(.PUT, "/local/routes", json: ["messageSources": ["digitalTwinChangeEvents"]]).0.status
                == .badRequest)
        #expect(await request(.PUT, "/local/routes", json: ["sources": []]).0.status == .badRequest)
        #expect(hub.routedEventSources == [.deviceLifecycleEvents])

        _ = try hub.ensureDevice("d1")
        hub.telemetry.append(
            TelemetryRecord(
                enqueuedTime: Date(), deviceId: "d1", message: Message(payload: Data("x".utf8), messageId: "t1"),
                rawProperties: "%24.mid=t1"),
            size: 10)
        let (_, all) = await request(.GET, "/local/telemetry")
        #expect(
            all?["messages"]?.arrayValue?.compactMap { $0["messageSource"] } == ["deviceLifecycleEvents", "Telemetry"])
        let (_, lifecycle) = await request(.GET, "/local/telemetry?messageSource=deviceLifecycleEvents")
        #expect(lifecycle?["messages"]?.arrayCount == 1)
        #expect(lifecycle?["messages"]?.arrayValue?.first?["properties"]?["opType"] == "createDeviceIdentity")
        let (_, telemetry) = await request(.GET, "/local/telemetry?messageSource=Telemetry")
        #expect(telemetry?["messages"]?.arrayValue?.compactMap { $0["messageId"] } == ["t1"])
        #expect(await request(.GET, "/local/telemetry?messageSource=Telemetry,nope").0.status == .badRequest)
        #expect(await request(.GET, "/local/telemetry/stream?messageSource=nope").0.status == .badRequest)
    }

    @Test func faultsCanBeSetReadAndCleared() async throws {
        let (set, faults) = await request(
            .PUT, "/local/faults", json: ["throttleNextOperations": 2, "acknowledgementDelayMilliseconds": 50])
        #expect(set.status == .ok)
        #expect(faults?["throttleNextOperations"] == 2)
        #expect(hub.faults.acknowledgementDelayMilliseconds == 50)
        #expect(await request(.DELETE, "/local/faults").0.status == .noContent)
        #expect(hub.faults == Faults())
    }

    @Test func fileUploadNeedsTheDevicesOwnToken() async throws {
        let record = try hub.ensureDevice("d1")
        let key = try #require(record.authentication.primaryKey)
        let deviceToken = try SASToken(resourceURI: "localhost/devices/d1", key: key, timeToLive: 600).string
        let (started, info) = await request(
            .POST, "/devices/d1/files", json: ["blobName": "dir/file.txt"], authorization: deviceToken)
        #expect(started.status == .ok)
        #expect(info?["blobName"] == "d1/dir/file.txt")
        #expect(info?["containerName"] == .string(Hub.fileUploadContainer))
        let correlationId = try #require(info?["correlationId"].flatMap(RegistryJSON.stringValue))
        let otherDevice = try SASToken(resourceURI: "localhost/devices/d2", key: key, timeToLive: 600).string
        #expect(
            await request(.POST, "/devices/d1/files", json: ["blobName": "x"], authorization: otherDevice).0.status
                == .unauthorized)
        #expect(
            await request(
                .POST, "/devices/d1/files/notifications",
                json: [
                    "correlationId": .string(correlationId), "isSuccess": true, "statusCode": 200,
                    "statusDescription": "ok",
                ], authorization: deviceToken
            ).0.status == .noContent)
        #expect(
            hub.fileUploadNotifications.read(after: 0, limit: 10).entries.first?.entry.blobName == "d1/dir/file.txt")
        #expect(
            await request(
                .POST, "/devices/d1/files/notifications",
                json: ["correlationId": .string(correlationId), "isSuccess": true], authorization: deviceToken
            ).0.status == .badRequest)
    }
}

extension JSONValue {
    var arrayValue: [JSONValue]? {
        if case .array(let items) = self { return items }
        return nil
    }

    var arrayCount: Int? { arrayValue?.count }
}
