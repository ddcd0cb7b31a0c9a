import Foundation
import IoTHubProtocol
import Logging
import NIOCore
import NIOHTTP1
import Testing

@testable import LocalHub

/// LocalHub as the IoT Edge runtime, through the routers without sockets: the workload API's
/// checks, and which credentials the method routes take from modules (`x-ms-edge-moduleId`).
/// `EdgeModuleTests` (IoTHubDeviceTests) and the conformance suite cover them over the real
/// sockets.
@Suite struct EdgeRuntimeTests {
    let hub: Hub
    let edge = EdgeDevice(deviceId: "edge1", socketPath: "/unused/workload.sock")
    let module: IdentityRecord
    let other: IdentityRecord

    init() throws {
        hub = Hub(
            hostName: "localhost", ownerPolicyKey: IdentityAuthentication.randomKey(), logger: Logger(label: "test"))
        _ = try hub.ensureDevice("edge1")
        _ = try hub.ensureDevice("d1")
        module = try hub.putIdentity(IdentityKey(deviceId: "edge1", moduleId: "filter"), body: [:], ifMatch: nil)
        other = try hub.putIdentity(IdentityKey(deviceId: "edge1", moduleId: "other"), body: [:], ifMatch: nil)
    }

    static func respond(
        _ router: Router, _ method: HTTPMethod, _ uri: String, json: JSONValue? = nil, headers: [(String, String)] = []
    )
        async -> (HTTPResponseStatus, JSONValue?)
    {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: uri)
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        let response = await router.respond(
            to: RouterRequest(head: head, body: ByteBuffer(bytes: json.map { $0.encoded() } ?? Data())))
        guard case .buffer(let buffer) = response.body, buffer.readableBytes > 0 else { return (response.status, nil) }
        return (response.status, try? JSONValue(parsing: Data(buffer.readableBytesView)))
    }

    func sign(_ path: String, _ body: JSONValue) async -> (HTTPResponseStatus, JSONValue?) {
        await Self.respond(
            .edgeWorkload(for: hub, edge: edge, caCertificatePEM: "PEM"), .POST, path + "?api-version=2019-01-30",
            json: body)
    }

    @Test func theWorkloadAPISignsWithTheModulesKeyForItsGeneration() async throws {
        let text = "localhost%2Fdevices%2Fedge1%2Fmodules%2Ffilter\n1700000000"
        let request: JSONValue = [
            "keyId": "primary", "algo": "HMACSHA256", "data": .string(Data(text.utf8).base64EncodedString()),
        ]
        let path = "/modules/filter/genid/\(module.generationId)/sign"
        let (status, body) = await sign(path, request)
        #expect(status == .ok)
        let key = try #require(module.authentication.primaryKey)
        #expect(body == ["digest": .string(try SASToken.sign(text, key: key))])

        // Another generation, an unknown module, another device's module: no signature.
        #expect(await sign("/modules/filter/genid/1/sign", request).0 == .notFound)
        #expect(await sign("/modules/ghost/genid/\(module.generationId)/sign", request).0 == .notFound)
        // Bad requests.
        var badAlgorithm = request.objectValue ?? [:]
        badAlgorithm["algo"] = "HMACSHA1"
        #expect(await sign(path, .object(badAlgorithm)).0 == .badRequest)
        var badData = request.objectValue ?? [:]
        badData["data"] = "not base64!"
        #expect(await sign(path, .object(badData)).0 == .badRequest)
        let withoutVersion = await Self.respond(
            .edgeWorkload(for: hub, edge: edge, caCertificatePEM: "PEM"), .POST, path, json: request)
        #expect(withoutVersion.0 == .badRequest)
        let bundle = await Self.respond(
            .edgeWorkload(for: hub, edge: edge, caCertificatePEM: "PEM"), .GET, "/trust-bundle?api-version=2019-01-30")
        #expect(bundle.0 == .ok && bundle.1 == ["certificate": "PEM"])
    }

    func invoke(authorization: String, caller: String?) async -> HTTPResponseStatus {
        var headers = [("Authorization", authorization)]
        if let caller { headers.append(("x-ms-edge-moduleId", caller)) }
        return await Self.respond(
            .https(for: hub), .POST, "/twins/d1/methods?api-version=2021-04-12",
            json: ["methodName": "reboot", "responseTimeoutInSeconds": 5], headers: headers
        ).0
    }

    @Test func methodRoutesTakeAModulesOwnTokenWithItsEdgeModuleId() async throws {
        let moduleToken = try SASToken(
            resourceURI: "localhost/devices/edge1/modules/filter", key: #require(module.authentication.primaryKey),
            timeToLive: 600
        ).string
        // Authorised: the target is simply not online.
        #expect(await invoke(authorization: moduleToken, caller: "edge1/filter") == .notFound)
        // The header must name the token's module, in the form {device}/{module}.
        #expect(await invoke(authorization: moduleToken, caller: "edge1/other") == .unauthorized)
        #expect(await invoke(authorization: moduleToken, caller: "edge1") == .unauthorized)
        // A module token alone is no service credential.
        #expect(await invoke(authorization: moduleToken, caller: nil) == .unauthorized)
        // Signed with another module's key.
        let forged = try SASToken(
            resourceURI: "localhost/devices/edge1/modules/filter", key: #require(other.authentication.primaryKey),
            timeToLive: 600
        ).string
        #expect(await invoke(authorization: forged, caller: "edge1/filter") == .unauthorized)
        // A device token with a module's header.
        let deviceToken = try SASToken(
            resourceURI: "localhost/devices/edge1",
            key: #require(hub.identity(IdentityKey(deviceId: "edge1"))?.authentication.primaryKey), timeToLive: 600
        ).string
        #expect(await invoke(authorization: deviceToken, caller: "edge1/filter") == .unauthorized)
    }
}
