import Foundation
import IoTHubProtocol
import Testing

@testable import LocalHub

/// LocalHub over real TLS sockets with mosquitto's own command-line clients, an MQTT
/// implementation independent of ours.
@Suite(.serialized, .timeLimit(.minutes(3))) struct LiveMQTTTests {
    @Test func telemetryFromMosquittoPubIsRecordedWithItsProperties() async throws {
        try await TestHub.with { hub in
            let token = try hub.token(deviceId: "dev1")
            let topic = TelemetryTopic(
                deviceId: "dev1",
                message: Message(messageId: "m-1", contentType: "application/json", properties: ["a b": "c&d"])
            ).name
            let run = try await ProgramRun.run(
                "mosquitto_pub",
                hub.mosquittoArguments(deviceId: "dev1", password: token.string) + [
                    "-q", "1", "-t", topic, "-m", #"{"t":21}"#,
                ])
            #expect(run.status == 0, "\(run.error)")
            let page = hub.hub.telemetry.read(after: 0, limit: 10)
            let record = try #require(page.entries.first?.entry)
            #expect(record.deviceId == "dev1")
            #expect(record.message.messageId == "m-1")
            #expect(record.message.contentType == "application/json")
            #expect(record.message.properties == ["a b": "c&d"])
            #expect(String(decoding: record.message.payload, as: UTF8.self) == #"{"t":21}"#)
        }
    }

    @Test func wrongCredentialsAreRefused() async throws {
        try await TestHub.with { hub in
            let wrongKey = Data(repeating: 9, count: 32).base64EncodedString()
            let forged = try SASToken(resourceURI: "localhost/devices/dev1", key: wrongKey, timeToLive: 600)
            let forgedRun = try await ProgramRun.run(
                "mosquitto_pub",
                hub.mosquittoArguments(deviceId: "dev1", password: forged.string) + [
                    "-t", "devices/dev1/messages/events/", "-m", "x",
                ])
            #expect(forgedRun.status != 0)
            #expect(forgedRun.error.lowercased().contains("not authori"), "\(forgedRun.error)")

            let expired = try SASToken(
                resourceURI: "localhost/devices/dev1",
                key: try #require(hub.hub.identity(IdentityKey(deviceId: "dev1"))?.authentication.primaryKey),
                expiry: 1000)
            let expiredRun = try await ProgramRun.run(
                "mosquitto_pub",
                hub.mosquittoArguments(deviceId: "dev1", password: expired.string) + [
                    "-t", "devices/dev1/messages/events/", "-m", "x",
                ])
            #expect(expiredRun.status != 0)

            let unknown = try await ProgramRun.run(
                "mosquitto_pub",
                hub.mosquittoArguments(deviceId: "nobody", password: forged.string) + [
                    "-t", "devices/nobody/messages/events/", "-m", "x",
                ])
            #expect(unknown.status != 0)
            #expect(hub.hub.telemetry.lastSequenceNumber == 0)
        }
    }

    @Test func cloudToDeviceMessagesReachMosquittoSubAndAreCompletedByItsAck() async throws {
        try await TestHub.with { hub in
            let token = try hub.token(deviceId: "dev1")
            let arguments =
                hub.mosquittoArguments(deviceId: "dev1", password: token.string)
                + ["-q", "1", "-t", TopicFilter.cloudToDevice(deviceId: "dev1"), "-C", "1", "-v", "-W", "15"]
            let (process, output) = try ProgramRun.start("mosquitto_sub", arguments)
            #expect(
                await TestHub.eventually {
                    hub.hub.state.withLockedValue {
                        !($0.identities[IdentityKey(deviceId: "dev1")]?.subscriptions.isEmpty ?? true)
                    }
                })
            _ = try hub.hub.enqueueCloudToDevice(
                to: "dev1", message: Message(payload: Data("hello".utf8), messageId: "c2d-1", properties: ["k": "v"]),
                timeToLive: nil)
            await Task.detached { process.waitUntilExit() }.value
            let line = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(
                line.hasPrefix(
                    "devices/dev1/messages/devicebound/%24.mid=c2d-1&%24.to=%2Fdevices%2Fdev1%2Fmessages%2FdeviceBound"),
                "\(line)")
            #expect(line.contains("k=v hello"))
            #expect(
                await TestHub.eventually {
                    hub.hub.identity(IdentityKey(deviceId: "dev1"))?.cloudToDevice.isEmpty == true
                })
        }
    }

    @Test func subscriptionsOutsideIoTHubsTopicsAreRefused() async throws {
        try await TestHub.with { hub in
            let token = try hub.token(deviceId: "dev1")
            let run = try await ProgramRun.run(
                "mosquitto_sub",
                hub.mosquittoArguments(deviceId: "dev1", password: token.string) + [
                    "-t", "devices/other/messages/devicebound/#", "-E",
                ])
            #expect(run.status != 0 || run.error.lowercased().contains("denied"), "\(run.status) \(run.error)")
            #expect(hub.hub.identity(IdentityKey(deviceId: "dev1"))?.subscriptions.isEmpty == true)
        }
    }

    @Test func aPublishToAForeignTopicClosesTheConnection() async throws {
        try await TestHub.with { hub in
            let token = try hub.token(deviceId: "dev1")
            let run = try await ProgramRun.run(
                "mosquitto_pub",
                hub.mosquittoArguments(deviceId: "dev1", password: token.string) + [
                    "-q", "1", "-t", "devices/dev2/messages/events/", "-m", "x", "-d",
                ])
            #expect(!run.output.contains("received PUBACK"), "\(run.output)")
            #expect(hub.hub.telemetry.lastSequenceNumber == 0)
        }
    }

    @Test func oversizedMessagesCloseTheConnectionAndTheLimitItselfPasses() async throws {
        try await TestHub.with { hub in
            let token = try hub.token(deviceId: "dev1")
            let file = hub.directory.appendingPathComponent("payload")
            try Data(repeating: 65, count: Message.maximumSize).write(to: file)
            let atLimit = try await ProgramRun.run(
                "mosquitto_pub",
                hub.mosquittoArguments(deviceId: "dev1", password: token.string) + [
                    "-q", "1", "-t", "devices/dev1/messages/events/", "-f", file.path, "-d",
                ])
            #expect(atLimit.output.contains("received PUBACK"), "\(atLimit.output)")
            try Data(repeating: 65, count: Message.maximumSize + 1).write(to: file)
            let over = try await ProgramRun.run(
                "mosquitto_pub",
                hub.mosquittoArguments(deviceId: "dev1", password: token.string) + [
                    "-q", "1", "-t", "devices/dev1/messages/events/", "-f", file.path, "-d",
                ])
            #expect(!over.output.contains("received PUBACK"), "\(over.output)")
            #expect(hub.hub.telemetry.lastSequenceNumber == 1)
        }
    }

    @Test func mosquittoPubLineModePipelinesThousandsOfQoS1Messages() async throws {
        try await TestHub.with { hub in
            let token = try hub.token(deviceId: "dev1")
            let file = hub.directory.appendingPathComponent("lines")
            try Data((1...5000).map { "message \($0)\n" }.joined().utf8).write(to: file)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = [
                "-c",
                (["mosquitto_pub"] + hub.mosquittoArguments(deviceId: "dev1", password: token.string).map { "'\($0)'" }
                    + ["-q", "1", "-t", "devices/dev1/messages/events/", "-l", "<", file.path]).joined(separator: " "),
            ]
            try process.run()
            await Task.detached { process.waitUntilExit() }.value
            #expect(process.terminationStatus == 0)
            let page = hub.hub.telemetry.read(after: 0, limit: 10_000)
            #expect(page.entries.count == 5000)
            #expect(
                page.entries.map { String(decoding: $0.entry.message.payload, as: UTF8.self) }
                    == (1...5000).map { "message \($0)" })
        }
    }

    /// The telemetry kept for reading is bounded in bytes: 5,000 messages of 100 bytes into a
    /// 100,000-byte record keep only the newest that fit, and a reader learns how many it missed.
    @Test func theTelemetryRecordKeepsTheNewestMessagesThatFitItsByteCapacity() async throws {
        try await TestHub.with(telemetryByteCapacity: 100_000) { hub in
            let token = try hub.token(deviceId: "dev1")
            let file = hub.directory.appendingPathComponent("lines")
            try Data((1...5000).map { String(format: "%099d\n", $0) }.joined().utf8).write(to: file)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = [
                "-c",
                (["mosquitto_pub"] + hub.mosquittoArguments(deviceId: "dev1", password: token.string).map { "'\($0)'" }
                    + ["-q", "1", "-t", "devices/dev1/messages/events/", "-l", "<", file.path]).joined(separator: " "),
            ]
            try process.run()
            await Task.detached { process.waitUntilExit() }.value
            #expect(process.terminationStatus == 0)
            let page = hub.hub.telemetry.read(after: 0, limit: 10_000)
            let perMessage = TelemetryRecord.memoryFootprint(bodyBytes: 99, propertyBytes: 0)
            #expect(page.entries.count == 100_000 / perMessage)
            #expect(page.dropped == UInt64(5000 - page.entries.count))
            #expect(
                page.entries.last.map { String(decoding: $0.entry.message.payload, as: UTF8.self) }
                    == String(format: "%099d", 5000))
        }
    }
}
