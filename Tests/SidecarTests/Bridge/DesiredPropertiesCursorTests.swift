import IoTHubProtocol
import Testing

@testable import Sidecar

@Suite(.timeLimit(.minutes(1))) struct DesiredPropertiesCursorTests {
    @Test func pollsReturnOnceTheVersionPassesTheCursorWithThePatches() async throws {
        let cursor = DesiredPropertiesCursor()
        cursor.replace(desired: TwinProperties(properties: ["a": 1], version: 3))
        let now = try #require(await cursor.poll(since: 0, timeout: .zero))
        #expect(now.version == 3)
        #expect(now.patches == nil, "the patches before version 3 are not known")
        #expect(await cursor.poll(since: 3, timeout: .milliseconds(50)) == nil)

        async let waiting = cursor.poll(since: 3, timeout: .seconds(5))
        try await Task.sleep(for: .milliseconds(50))
        cursor.apply(patch: ["b": 2, "$version": 4])
        cursor.apply(patch: ["a": nil, "$version": 5])
        let update = try #require(await waiting)
        #expect(update.version >= 4)
        let later = try #require(cursor.current(since: 3))
        #expect(later.desired == ["b": 2, "$version": 5])
        #expect(later.patches == [["b": 2, "$version": 4], ["a": nil, "$version": 5]])
        #expect(cursor.current(since: 4)?.patches == [["a": nil, "$version": 5]])
    }

    @Test func aGapOrAStalePatchIsHandledSafely() {
        let cursor = DesiredPropertiesCursor()
        cursor.replace(desired: TwinProperties(properties: [:], version: 1))
        cursor.apply(patch: ["x": 1, "$version": 3])
        #expect(cursor.current(since: 1)?.patches == nil, "version 2 was never seen")
        cursor.apply(patch: ["x": 0, "$version": 2])
        #expect(cursor.current(since: 1)?.desired == ["x": 1, "$version": 3], "an older patch changes nothing")
        cursor.apply(patch: ["no": "version"])
        #expect(cursor.current(since: 2)?.version == 3)
    }

    @Test func cursorPollsWithTinyTimeoutsNeverHang() async {
        let cursor = DesiredPropertiesCursor()
        for _ in 0..<2_000 {
            #expect(await cursor.poll(since: 5, timeout: .nanoseconds(1)) == nil)
        }
    }

    @Test func aCancelledPollReturnsNilAndAChangeWakesEveryPoller() async throws {
        let cursor = DesiredPropertiesCursor()
        let cancelled = Task { await cursor.poll(since: 0, timeout: .seconds(30)) }
        cancelled.cancel()
        #expect(await cancelled.value == nil)

        let pollers = (0..<20).map { _ in Task { await cursor.poll(since: 0, timeout: .seconds(30)) } }
        try await Task.sleep(for: .milliseconds(50))
        cursor.apply(patch: ["a": 1, "$version": 1])
        for poller in pollers {
            #expect(await poller.value?.version == 1)
        }
    }
}
