import Foundation
import IoTHubProtocol
import Logging
import Testing

@testable import IoTHubDevice
@testable import LocalHub

/// The outbox against a real LocalHub: what it accepts reaches the hub in order, survives a
/// reopening, expires, and respects its bounds.
@Suite(.serialized, .timeLimit(.minutes(3))) struct TelemetryOutboxTests {
    private final class Scratch {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("outbox-\(UUID().uuidString)").path
        deinit { try? FileManager.default.removeItem(atPath: path) }
    }

    private func makeOutbox(
        _ client: IoTHubDeviceClient, _ scratch: Scratch, _ adjust: (inout OutboxConfiguration) -> Void = { _ in }
    ) throws -> TelemetryOutbox {
        var configuration = OutboxConfiguration(directory: scratch.path)
        adjust(&configuration)
        var logger = Logger(label: "outbox-test")
        logger.logLevel = .error
        return try TelemetryOutbox(client: client, configuration: configuration, logger: logger)
    }

    private func message(_ index: Int, size: Int = 10) -> Message {
        Message(
            payload: Data("message \(index) ".utf8 + [UInt8](repeating: 0x2e, count: size)),
            properties: ["index": String(index)])
    }

    /// Accepts the messages numbered `indices`, a hundred to a request; returns their ids.
    private func acceptInHundreds(_ outbox: TelemetryOutbox, _ indices: Range<Int>, size: Int = 10) async throws
        -> [String]
    {
        var ids: [String] = []
        for start in stride(from: indices.lowerBound, to: indices.upperBound, by: 100) {
            ids += try await outbox.accept(
                (start..<min(start + 100, indices.upperBound)).map { message($0, size: size) })
        }
        return ids
    }

    /// Waits until `outbox` is empty and the hub has at least `count` messages, then stops
    /// `delivery`.
    private func finish(
        _ delivery: Task<Void, Never>, of outbox: TelemetryOutbox, once fixture: HubFixture, has count: Int,
        timeout: Duration = .seconds(60)
    ) async {
        #expect(await outbox.waitUntilEmpty(timeout: timeout))
        #expect(await HubFixture.eventually(timeout: .seconds(30)) { fixture.telemetry.count >= count })
        delivery.cancel()
        await delivery.value
    }

    @Test func acceptedMessagesReachTheHubInTheirOrderWithTheirIds() async throws {
        try await HubFixture.with { fixture in
            let scratch = Scratch()
            let client = try fixture.client()
            let outbox = try makeOutbox(client, scratch)
            var ids: [String] = []
            for index in 0..<200 { ids += try await outbox.accept([message(index)]) }
            ids += try await outbox.accept((200..<300).map { message($0) })
            let delivery = Task { await outbox.run() }
            #expect(await HubFixture.eventually(timeout: .seconds(30)) { fixture.telemetry.count >= 300 })
            #expect(await outbox.waitUntilEmpty(timeout: .seconds(30)))
            delivery.cancel()
            await delivery.value
            let received = fixture.telemetry.filter { !$0.redelivered }
            #expect(received.map { $0.message.properties["index"] } == (0..<300).map { String($0) })
            #expect(received.map(\.message.messageId) == ids.map(Optional.init))
            let status = await outbox.status()
            #expect(status.messages == 0 && status.delivered == 300 && status.bytes == 0)
            outbox.close()
            await client.shutdown()
        }
    }

    /// A backlog of many pages: later pages go to the connection while earlier ones wait for
    /// their acknowledgements, and the hub still gets everything once, in order.
    @Test func aBacklogOfManyPagesArrivesInOrderOnce() async throws {
        try await HubFixture.with { fixture in
            let scratch = Scratch()
            let client = try fixture.client()
            let outbox = try makeOutbox(client, scratch)
            let ids = try await acceptInHundreds(outbox, 0..<2600)
            let delivery = Task { await outbox.run() }
            await finish(delivery, of: outbox, once: fixture, has: 2600)
            #expect(fixture.telemetry.count == 2600, "no copies without a drop")
            #expect(fixture.telemetry.map { $0.message.properties["index"] } == (0..<2600).map { String($0) })
            #expect(fixture.telemetry.map(\.message.messageId) == ids.map(Optional.init))
            let status = await outbox.status()
            #expect(status.messages == 0 && status.delivered == 2600 && status.bytes == 0)
            outbox.close()
            await client.shutdown()
        }
    }

    /// More is accepted than the outbox keeps in memory for delivery: the frames beyond that are
    /// read back from the disk, in between those taken from memory, and the hub gets every
    /// message once, in order.
    @Test func aBacklogLargerThanWhatIsKeptInMemoryArrivesInOrderOnce() async throws {
        try await HubFixture.with { fixture in
            let scratch = Scratch()
            let client = try fixture.client()
            let outbox = try makeOutbox(client, scratch)
            let batches = TelemetryOutbox.recentBytesLimit / 100_000 + 20
            var ids = try await acceptInHundreds(outbox, 0..<(batches * 100), size: 1000)
            let kept = outbox.framesInMemory
            #expect(kept.frames > 0 && kept.frames < batches, "\(kept)")
            #expect(outbox.framesReadBack == 0)
            #expect(kept.bytes > 0 && kept.bytes <= TelemetryOutbox.recentBytesLimit)
            let delivery = Task { await outbox.run() }
            // More while delivering: in memory again once there is room, after a gap read from the disk.
            let total = (batches + 20) * 100
            ids += try await acceptInHundreds(outbox, (batches * 100)..<total, size: 1000)
            await finish(delivery, of: outbox, once: fixture, has: total, timeout: .seconds(90))
            #expect(fixture.telemetry.count == total, "no copies without a drop")
            #expect(fixture.telemetry.map { $0.message.properties["index"] } == (0..<total).map { String($0) })
            #expect(fixture.telemetry.map(\.message.messageId) == ids.map(Optional.init))
            #expect(outbox.framesInMemory.frames == 0 && outbox.framesInMemory.bytes == 0)
            // What did not fit was read back; what was kept was not.
            #expect(outbox.framesReadBack >= batches - kept.frames && outbox.framesReadBack < batches + 20)
            outbox.close()
            await client.shutdown()
        }
    }

    /// An outbox that keeps up never reads its own frames back: each goes to the delivery loop
    /// in memory, also when the loop looks for the next frame while the log is writing it.
    @Test func anOutboxThatKeepsUpDeliversFromMemoryOnly() async throws {
        try await HubFixture.with { fixture in
            let scratch = Scratch()
            let client = try fixture.client()
            let outbox = try makeOutbox(client, scratch)
            let delivery = Task { await outbox.run() }
            for index in 0..<500 { _ = try await outbox.accept([message(index)]) }
            await finish(delivery, of: outbox, once: fixture, has: 500)
            #expect(fixture.telemetry.map { $0.message.properties["index"] } == (0..<500).map { String($0) })
            #expect(outbox.framesReadBack == 0)
            outbox.close()
            await client.shutdown()
        }
    }

    @Test func whatWasAcceptedSurvivesReopeningAndIsDeliveredThen() async throws {
        try await HubFixture.with { fixture in
            let scratch = Scratch()
            let client = try fixture.client()
            do {
                let outbox = try makeOutbox(client, scratch)
                _ = try await outbox.accept((0..<50).map { message($0) })
                outbox.close()
            }
            let reopened = try makeOutbox(client, scratch)
            #expect(await reopened.status().messages == 50)
            #expect(await reopened.status().oldestAcceptedAt != nil)
            let delivery = Task { await reopened.run() }
            #expect(await HubFixture.eventually(timeout: .seconds(30)) { fixture.telemetry.count >= 50 })
            #expect(await reopened.waitUntilEmpty(timeout: .seconds(30)))
            delivery.cancel()
            await delivery.value
            #expect(await reopened.status().messages == 0)
            #expect(reopened.framesReadBack == 1, "what a reopened outbox holds is read from the disk")
            reopened.close()
            await client.shutdown()
        }
    }

    @Test func expiredMessagesAreCountedAndNeverSent() async throws {
        try await HubFixture.with { fixture in
            let scratch = Scratch()
            let client = try fixture.client()
            let outbox = try makeOutbox(client, scratch) { $0.timeToLive = .milliseconds(300) }
            let events = outbox.events()
            _ = try await outbox.accept((0..<5).map { message($0) })
            // A message's own expiry wins when it is earlier than the outbox's time to live.
            let expiresFirst = Message(payload: Data("x".utf8), expiryTimeUTC: "2000-01-01T00:00:00.000Z")
            let keep = Message(payload: Data("kept".utf8), expiryTimeUTC: "2100-01-01T00:00:00Z")
            try await Task.sleep(for: .milliseconds(500))
            let otherScratch = Scratch()
            let short = try makeOutbox(client, otherScratch) { $0.timeToLive = .seconds(3600) }
            _ = try await short.accept([expiresFirst, keep])
            let delivery = Task { await outbox.run() }
            let shortDelivery = Task { await short.run() }
            #expect(await HubFixture.eventually { fixture.telemetry.count >= 1 })
            try await Task.sleep(for: .milliseconds(300))
            delivery.cancel()
            shortDelivery.cancel()
            await delivery.value
            await shortDelivery.value
            #expect(fixture.telemetry.map(\.message.payload) == [Data("kept".utf8)])
            #expect(await outbox.status().expired == 5)
            #expect(await short.status().expired == 1)
            #expect(await first(of: events) == .expired(count: 5))
            outbox.close()
            short.close()
            await client.shutdown()
        }
    }

    @Test func aFullOutboxRefusesNewMessagesAndKeepsWhatItHas() async throws {
        try await HubFixture.with { fixture in
            let scratch = Scratch()
            let client = try fixture.client()
            let outbox = try makeOutbox(client, scratch) { $0.maximumBytes = 20_000 }
            let events = outbox.events()
            var accepted = 0
            var refusal: OutboxError?
            for index in 0..<100 {
                do {
                    _ = try await outbox.accept([message(index, size: 900)])
                    accepted += 1
                } catch let error as OutboxError {
                    refusal = error
                    break
                }
            }
            guard case .full(_, let limit)? = refusal else {
                Issue.record("no refusal: \(String(describing: refusal))")
                return
            }
            #expect(limit == 20_000)
            #expect((15...21).contains(accepted))
            let status = await outbox.status()
            #expect(status.isFull && status.rejected == 1 && status.messages == accepted && status.bytes <= 20_000)
            #expect(await first(of: events) == .full)
            // Delivering makes room again.
            let delivery = Task { await outbox.run() }
            #expect(await HubFixture.eventually { fixture.telemetry.count == accepted })
            _ = try await outbox.accept([message(1000)])
            #expect(await HubFixture.eventually { fixture.telemetry.count == accepted + 1 })
            #expect(await outbox.status().isFull == false)
            delivery.cancel()
            await delivery.value
            outbox.close()
            await client.shutdown()
        }
    }

    @Test func dropOldestMakesRoomForTheNewest() async throws {
        try await HubFixture.with { fixture in
            let scratch = Scratch()
            let client = try fixture.client()
            let outbox = try makeOutbox(client, scratch) {
                $0.maximumBytes = 20_000
                $0.whenFull = .dropOldest
            }
            for index in 0..<60 { _ = try await outbox.accept([message(index, size: 900)]) }
            let status = await outbox.status()
            #expect(status.dropped > 30 && status.messages + status.dropped == 60 && status.bytes <= 20_000)
            let delivery = Task { await outbox.run() }
            #expect(await HubFixture.eventually { fixture.telemetry.count == status.messages })
            delivery.cancel()
            await delivery.value
            // The newest are the ones that went.
            #expect(fixture.telemetry.last?.message.properties["index"] == "59")
            #expect(fixture.telemetry.first?.message.properties["index"] == String(status.dropped))
            outbox.close()
            await client.shutdown()
        }
    }

    /// Dropping the oldest while pages are in flight: only messages not yet taken are dropped;
    /// every message is either delivered or counted as dropped, and what arrives is in order.
    @Test func dropOldestWhileDeliveringDropsOnlyWhatWasNotTaken() async throws {
        try await HubFixture.with { fixture in
            let scratch = Scratch()
            let client = try fixture.client()
            let outbox = try makeOutbox(client, scratch) {
                $0.maximumBytes = 200_000
                $0.whenFull = .dropOldest
            }
            let delivery = Task { await outbox.run() }
            for start in stride(from: 0, to: 6000, by: 50) {
                _ = try await outbox.accept((start..<(start + 50)).map { message($0, size: 200) })
            }
            #expect(await outbox.waitUntilEmpty(timeout: .seconds(60)))
            let status = await outbox.status()
            #expect(status.delivered + status.dropped == 6000 && status.expired == 0, "\(status)")
            #expect(await HubFixture.eventually(timeout: .seconds(30)) { fixture.telemetry.count >= status.delivered })
            delivery.cancel()
            await delivery.value
            let indices = fixture.telemetry.compactMap { $0.message.properties["index"].flatMap { Int($0) } }
            #expect(indices.count == status.delivered, "no copies without a drop")
            #expect(indices == indices.sorted() && Set(indices).count == indices.count)
            #expect(indices.last == 5999)
            outbox.close()
            await client.shutdown()
        }
    }

    @Test func aBatchIsTakenWholeOrNotAtAll() async throws {
        try await HubFixture.with { fixture in
            let scratch = Scratch()
            let client = try fixture.client()
            let outbox = try makeOutbox(client, scratch)
            let tooLarge = Message(payload: Data(count: Message.maximumSize + 1))
            await #expect(throws: OutboxError.self) { _ = try await outbox.accept([message(0), tooLarge, message(2)]) }
            // Within IoT Hub's size limit, but too long a topic for MQTT (each space takes three bytes).
            let tooLongATopic = Message(properties: ["k": String(repeating: " ", count: 21_846)])
            do {
                _ = try await outbox.accept([message(0), message(1), tooLongATopic])
                Issue.record("a message whose topic MQTT cannot carry was accepted")
            } catch OutboxError.invalid(let index, let reason) {
                #expect(index == 2)
                if case .topicTooLong = reason {} else { Issue.record("refused for another reason: \(reason)") }
            } catch {
                Issue.record("refused for another reason: \(error)")
            }
            #expect(await outbox.status().messages == 0)
            outbox.close()
            await client.shutdown()
        }
    }

    /// The hub drops the connection while a backlog drains: every message arrives, and the only
    /// copies are of messages sent again after the drop, with the same id.
    @Test(arguments: Transport.allCases) func aBacklogDrainsAcrossDroppedConnections(over transport: Transport)
        async throws
    {
        try await HubFixture.with { fixture in
            let scratch = Scratch()
            let client = try fixture.client(over: transport)
            let outbox = try makeOutbox(client, scratch)
            _ = try await acceptInHundreds(outbox, 0..<3000)
            let delivery = Task { await outbox.run() }
            for _ in 0..<3 {
                _ = await HubFixture.eventually { fixture.telemetry.count > 500 }
                _ = fixture.hub.dropConnection(of: IdentityKey(deviceId: "dev1"))
                try await Task.sleep(for: .milliseconds(300))
            }
            #expect(
                await HubFixture.eventually(timeout: .seconds(60)) {
                    Set(fixture.telemetry.compactMap { $0.message.properties["index"] }).count == 3000
                })
            // The last acknowledgements are counted a moment after the hub has the messages.
            #expect(await outbox.waitUntilEmpty(timeout: .seconds(30)))
            delivery.cancel()
            await delivery.value
            let byId = Dictionary(grouping: fixture.telemetry, by: { $0.message.messageId ?? "" })
            #expect(byId.count == 3000, "every copy carries the id of its message")
            let copies = fixture.telemetry.count - 3000
            #expect(copies < 1500, "\(copies) copies")
            #expect(await outbox.status().messages == 0)
            outbox.close()
            await client.shutdown()
        }
    }

    /// Messages accepted for one device are never sent as another: an outbox holding them
    /// refuses to open for another identity; an empty one changes hands.
    @Test func anOutboxHoldingOneDevicesMessagesRefusesAnother() async throws {
        try await HubFixture.with(devices: ["dev1", "dev2"]) { fixture in
            let scratch = Scratch()
            let first = try fixture.client("dev1")
            let second = try fixture.client("dev2")
            do {
                let outbox = try makeOutbox(first, scratch)
                _ = try await outbox.accept([message(0)])
                outbox.close()
            }
            #expect {
                _ = try makeOutbox(second, scratch)
            } throws: { error in
                "\(error)".contains("holds messages of localhost/dev1, not of localhost/dev2")
            }
            let reopened = try makeOutbox(first, scratch)
            let delivery = Task { await reopened.run() }
            #expect(await reopened.waitUntilEmpty(timeout: .seconds(30)))
            delivery.cancel()
            await delivery.value
            reopened.close()
            let handedOver = try makeOutbox(second, scratch)
            handedOver.close()
            await first.shutdown()
            await second.shutdown()
        }
    }
}
