import Foundation
import HTTPTypes
import IoTHubProtocol
import Testing

@testable import LocalHub
@testable import Sidecar

/// The HTTP layer in process, in front of a real bridge connected to a real LocalHub.
@Suite(.timeLimit(.minutes(2))) struct SidecarHTTPTests {
    @Test func aMessageReachesTheHubWithItsIdAndProperties() async throws {
        try await InProcessSidecar.with { sidecar in
            var headers = HTTPFields()
            headers[HTTPField.Name("iothub-messageid")!] = "in-process-1"
            headers[HTTPField.Name("iothub-app-color")!] = "blue"
            let reply = try await sidecar.request(.post, "/messages", headers: headers, body: "hello")
            #expect(reply.status == .ok)
            #expect(try InProcessSidecar.json(reply.body) == ["messageId": "in-process-1"])
            let record = try #require(sidecar.telemetry.last)
            #expect(record.message.messageId == "in-process-1")
            #expect(record.message.properties["color"] == "blue")
            #expect(String(decoding: record.message.payload, as: UTF8.self) == "hello")
        }
    }

    @Test func aMethodTheRouterDoesNotTakeIsAnswered405WithTheRoutesMethods() async throws {
        try await InProcessSidecar.with { sidecar in
            let reply = try await sidecar.request(.patch, "/inbox")
            #expect(reply.status == .methodNotAllowed)
            #expect(reply.headers[.allow] == "GET")
            #expect(reply.headers[.contentType] == "application/problem+json")
            #expect(try InProcessSidecar.json(reply.body)["code"] == "MethodNotAllowed")
            let twin = try await sidecar.request(.delete, "/twin")
            #expect(twin.headers[.allow] == "GET, PATCH")
            let nowhere = try await sidecar.request(.get, "/nowhere")
            #expect(nowhere.status == .notFound)
            #expect(try InProcessSidecar.json(nowhere.body)["code"] == "NotFound")
        }
    }

    @Test func theInboxLongPollHandsOutAMessageUnderALockUntilItIsCompleted() async throws {
        try await InProcessSidecar.with { sidecar in
            let empty = try await sidecar.request(.get, "/inbox?timeout=0")
            #expect(empty.status == .noContent)
            #expect(empty.headers[.connection] == "close")
            _ = try sidecar.hub.enqueueCloudToDevice(
                to: "dev1", message: Message(payload: Data("c2d".utf8), messageId: "m1"), timeToLive: nil)
            let received = try await sidecar.request(.get, "/inbox?timeout=10")
            #expect(received.status == .ok)
            #expect(received.body == "c2d")
            #expect(received.headers[HTTPField.Name("iothub-messageid")!] == "m1")
            #expect(received.headers[HTTPField.Name("iothub-deliverycount")!] == "1")
            let token = try #require(received.headers[.eTag]).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            #expect(try await sidecar.request(.delete, "/inbox/\(token)").status == .noContent)
            let again = try await sidecar.request(.delete, "/inbox/\(token)")
            #expect(again.status == .notFound)
            #expect(try InProcessSidecar.json(again.body)["code"] == "NotFound")
        }
    }

    @Test func aMethodRequestIsPolledAndAnsweredOnce() async throws {
        try await InProcessSidecar.with { sidecar in
            let key = IdentityKey(deviceId: "dev1")
            let call = Task {
                try await sidecar.hub.invokeMethod(
                    on: key, name: "reboot", payload: Data(#"{"delay":1}"#.utf8), responseTimeout: .seconds(20))
            }
            let polled = try await sidecar.request(.get, "/methods?name=reboot&timeout=20")
            #expect(polled.status == .ok)
            let request = try InProcessSidecar.json(polled.body)
            #expect(request["methodName"] == "reboot")
            #expect(request["payload"] == ["delay": 1])
            guard case .string(let requestId)? = request["requestId"] else {
                throw TestFailure("no requestId in \(request)")
            }
            var json = HTTPFields()
            json[.contentType] = "application/json"
            let answer = try await sidecar.request(
                .post, "/methods/\(requestId)/response", headers: json, body: #"{"status":201,"payload":{"ok":true}}"#)
            #expect(answer.status == .noContent)
            let result = try await call.value
            #expect(result.status == 201)
            #expect(try JSONValue(parsing: result.payload) == ["ok": true])
            let twice = try await sidecar.request(
                .post, "/methods/\(requestId)/response", headers: json, body: #"{"status":200}"#)
            #expect(twice.status == .notFound)
        }
    }

    @Test func theDesiredPropertiesLongPollReturnsOnceTheVersionPassesSince() async throws {
        try await InProcessSidecar.with { sidecar in
            let now = try InProcessSidecar.json(try await sidecar.request(.get, "/twin/desired?timeout=5").body)
            let version = try #require(now["version"]?.intValue)
            let poll = Task { try await sidecar.request(.get, "/twin/desired?since=\(version)&timeout=20") }
            try await Task.sleep(for: .milliseconds(200))
            _ = try sidecar.hub.patchDesired(
                IdentityKey(deviceId: "dev1"), patch: ["mode": "eco"], tags: nil, replace: false, ifMatch: nil)
            let update = try await poll.value
            #expect(update.status == .ok)
            let document = try InProcessSidecar.json(update.body)
            #expect(document["desired"]?["mode"] == "eco")
            #expect((document["version"]?.intValue ?? 0) > version)
        }
    }

    @Test func invalidRequestsAreProblemsNamingTheField() async throws {
        try await InProcessSidecar.with { sidecar in
            let timeout = try await sidecar.request(.get, "/methods?timeout=56")
            #expect(timeout.status == .badRequest)
            #expect(try InProcessSidecar.json(timeout.body)["field"] == "timeout")
            var json = HTTPFields()
            json[.contentType] = "application/json"
            let patch = try await sidecar.request(.patch, "/twin", headers: json, body: "[1]")
            #expect(patch.status == .badRequest)
            #expect(try InProcessSidecar.json(patch.body)["code"] == "ValueError")
            let token = try await sidecar.request(.put, "/sastoken", body: "SharedAccessSignature sr=x")
            #expect(token.status == .conflict, "a key identity takes no SAS token")
        }
    }

    @Test func respondAsyncIsAnswered202OnceStoredAndTheOutboxDeliversIt() async throws {
        try await InProcessSidecar.with(withOutbox: true) { sidecar in
            var headers = HTTPFields()
            headers[HTTPField.Name("iothub-messageid")!] = "stored-1"
            headers[.prefer] = "wait=5, respond-async"
            let reply = try await sidecar.request(.post, "/messages", headers: headers, body: "later")
            #expect(reply.status == .accepted)
            #expect(reply.headers[.preferenceApplied] == "respond-async")
            #expect(try InProcessSidecar.json(reply.body) == ["messageId": "stored-1"])
            #expect(await eventually { sidecar.telemetry.contains { $0.message.messageId == "stored-1" } })
            let outbox = try InProcessSidecar.json(try await sidecar.request(.get, "/outbox").body)
            #expect(outbox["delivery"] == "sync")
            #expect(outbox["whenFull"] == "reject-new")
            // Without the preference, the same sidecar answers as before.
            let plain = try await sidecar.request(.post, "/messages", body: "now")
            #expect(plain.status == .ok)
            #expect(plain.headers[.preferenceApplied] == nil)
        }
    }

    @Test func withoutAnOutboxRespondAsyncIsSentAtOnceAndTheOutboxIsNotFound() async throws {
        try await InProcessSidecar.with { sidecar in
            var headers = HTTPFields()
            headers[.prefer] = "respond-async"
            let reply = try await sidecar.request(.post, "/messages", headers: headers, body: "x")
            #expect(reply.status == .ok)
            #expect(reply.headers[.preferenceApplied] == nil)
            #expect(try await sidecar.request(.get, "/outbox").status == .notFound)
        }
    }

    @Test func theStatusSaysWhoTheSidecarIs() async throws {
        try await InProcessSidecar.with { sidecar in
            let status = try InProcessSidecar.json(try await sidecar.request(.get, "/status").body)
            #expect(
                status["identity"] == ["hostName": "localhost", "deviceId": "dev1", "authentication": "symmetricKey"])
            #expect(status["state"] == "connected")
            #expect(try await sidecar.request(.get, "/readyz").status == .ok)
        }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}
