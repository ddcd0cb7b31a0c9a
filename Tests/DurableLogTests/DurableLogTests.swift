import Foundation
import Testing

@testable import DurableLog

/// A private directory for one test, removed afterwards.
final class ScratchDirectory {
    let path: String

    init() {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("durable-log-\(UUID().uuidString)").path
    }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }

    var segmentFiles: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { $0.hasSuffix(".log") }.sorted()
            .map { path + "/" + $0 }
    }
}

private func payload(_ index: Int, size: Int = 100) -> [UInt8] {
    Array("frame \(index) ".utf8) + [UInt8](repeating: UInt8(truncatingIfNeeded: index), count: size)
}

private func readAll(_ log: DurableLog, after: UInt64 = 0) throws -> [DurableLog.Frame] {
    var frames: [DurableLog.Frame] = []
    var cursor = after
    while true {
        let page = try log.read(after: cursor, maximumBytes: 64 << 10)
        guard let last = page.last else { return frames }
        frames += page
        cursor = last.sequence
    }
}

@Suite(.timeLimit(.minutes(2))) struct DurableLogTests {
    @Test func framesComeBackInOrderAcrossSegmentsAndReopening() async throws {
        let scratch = ScratchDirectory()
        var sequences: [UInt64] = []
        do {
            let log = try DurableLog(directory: scratch.path, options: .init(segmentSize: 4096))
            for index in 0..<100 {
                sequences += Array(try await log.append([payload(index)]))
            }
            sequences += Array(try await log.append((100..<110).map { payload($0) }))
            #expect(log.segmentCount > 3)
            log.shutdown()
        }
        #expect(sequences == Array(1...110))
        let reopened = try DurableLog(directory: scratch.path, options: .init(segmentSize: 4096))
        #expect(reopened.recovery.isClean)
        #expect(reopened.recovery.frames == 110)
        let frames = try readAll(reopened)
        #expect(frames.map(\.sequence) == Array(1...110))
        #expect(frames.map(\.payload) == (0..<110).map { payload($0) })
        #expect(try await reopened.append([payload(999)]) == 111..<112)
        #expect(try readAll(reopened, after: 110).map(\.payload) == [payload(999)])
        reopened.shutdown()
    }

    @Test func concurrentAppendsShareSyncs() async throws {
        let scratch = ScratchDirectory()
        let log = try DurableLog(directory: scratch.path)
        let ranges = await withTaskGroup(of: Range<UInt64>?.self) { group in
            for index in 0..<400 { group.addTask { try? await log.append([payload(index)]) } }
            var ranges: [Range<UInt64>] = []
            for await range in group { if let range { ranges.append(range) } }
            return ranges
        }
        #expect(ranges.count == 400)
        #expect(Set(ranges.map(\.lowerBound)).count == 400)
        #expect(log.syncCount < 400, "group commit: \(log.syncCount) syncs for 400 appends")
        #expect(try readAll(log).count == 400)
        log.shutdown()
    }

    /// Appends racing each other while segments roll and consumed ones go: the next group is
    /// queued while the last one syncs, yet each append gets the sequences of its own frames,
    /// readers never see a frame before it is synced, and nothing is lost on reopening.
    @Test func racingAppendsKeepTheirFramesAcrossRollsAndSyncs() async throws {
        let scratch = ScratchDirectory()
        let log = try DurableLog(directory: scratch.path, options: .init(segmentSize: 8192))
        let appended = await withTaskGroup(of: (Int, Range<UInt64>)?.self) { group in
            for writer in 0..<16 {
                group.addTask {
                    var last: (Int, Range<UInt64>)?
                    for round in 0..<40 {
                        let index = writer * 1000 + round
                        let payloads = (0..<(1 + round % 3)).map { payload(index * 10 + $0) }
                        guard let range = try? await log.append(payloads) else { return nil }
                        // Readable once appended (synced), with exactly these payloads.
                        let frames = (try? log.read(after: range.lowerBound - 1, maximumFrames: payloads.count)) ?? []
                        guard frames.map(\.sequence) == Array(range), frames.map(\.payload) == payloads else {
                            return nil
                        }
                        last = (index, range)
                    }
                    return last
                }
            }
            var results: [(Int, Range<UInt64>)?] = []
            for await result in group { results.append(result) }
            return results
        }
        #expect(appended.count == 16)
        #expect(appended.allSatisfy { $0 != nil })
        let total = 16 * (0..<40).reduce(0) { $0 + 1 + $1 % 3 }
        #expect(log.lastSequence == UInt64(total))
        #expect(log.segmentCount > 3)
        log.shutdown()
        let reopened = try DurableLog(directory: scratch.path, options: .init(segmentSize: 8192))
        #expect(reopened.recovery.isClean)
        #expect(try readAll(reopened).map(\.sequence) == Array(1...UInt64(total)))
        reopened.shutdown()
    }

    @Test func aTornFrameAtTheEndIsCutOffAndAppendsContinue() async throws {
        let scratch = ScratchDirectory()
        do {
            let log = try DurableLog(directory: scratch.path)
            _ = try await log.append((0..<10).map { payload($0) })
            log.shutdown()
        }
        // A crash in the middle of writing the next frame: its header and part of its payload.
        var torn: [UInt8] = []
        FrameLayout.encode(payload(10, size: 5000), sequence: 11, into: &torn)
        try append(Array(torn.prefix(2000)), toFile: try #require(scratch.segmentFiles.last))
        let log = try DurableLog(directory: scratch.path)
        #expect(log.recovery.truncatedBytes == 2000)
        #expect(log.recovery.quarantined.isEmpty)
        #expect(try readAll(log).map(\.sequence) == Array(1...10))
        #expect(try await log.append([payload(11)]) == 11..<12)
        log.shutdown()
        let again = try DurableLog(directory: scratch.path)
        #expect(again.recovery.isClean)
        #expect(try readAll(again).map(\.sequence) == Array(1...11))
        again.shutdown()
    }

    @Test func garbageInTheMiddleIsQuarantinedAndEveryReadableFrameKept() async throws {
        let scratch = ScratchDirectory()
        do {
            let log = try DurableLog(directory: scratch.path, options: .init(segmentSize: 4096))
            for index in 0..<100 { _ = try await log.append([payload(index)]) }
            log.shutdown()
        }
        let files = scratch.segmentFiles
        #expect(files.count >= 3)
        // Overwrite 300 bytes in the middle of the first segment (frames are 130 bytes).
        try overwrite(files[0], at: 1000, with: [UInt8](repeating: 0xA5, count: 300))
        let log = try DurableLog(directory: scratch.path, options: .init(segmentSize: 4096))
        #expect(log.recovery.quarantined.count == 1)
        let span = try #require(log.recovery.quarantined.first)
        #expect(FileManager.default.fileExists(atPath: span.path))
        let frames = try readAll(log)
        let lost = Set(1...100).subtracting(frames.map { Int($0.sequence) })
        // Only the frames the garbage touched are gone: about three.
        #expect((2...4).contains(lost.count), "lost \(lost.sorted())")
        #expect(frames.allSatisfy { $0.payload == payload(Int($0.sequence) - 1) })
        #expect(try await log.append([payload(100)]) == 101..<102)
        log.shutdown()
        // Repaired for good: a second opening finds nothing wrong.
        let again = try DurableLog(directory: scratch.path, options: .init(segmentSize: 4096))
        #expect(again.recovery.isClean)
        again.shutdown()
    }

    @Test func aTruncatedOlderSegmentAndAStraySegmentOfGarbageAreQuarantined() async throws {
        let scratch = ScratchDirectory()
        do {
            let log = try DurableLog(directory: scratch.path, options: .init(segmentSize: 4096))
            for index in 0..<80 { _ = try await log.append([payload(index)]) }
            log.shutdown()
        }
        let files = scratch.segmentFiles
        // The second segment loses its last 50 bytes (a half frame).
        #expect(truncate(files[1], off_t(try fileSize(files[1]) - 50)) == 0)
        // A file that only looks like a segment.
        _ = FileManager.default.createFile(
            atPath: scratch.path + "/" + "00000000000000000500.log", contents: Data((0..<3000).map { UInt8($0 % 251) }))
        let log = try DurableLog(directory: scratch.path, options: .init(segmentSize: 4096))
        #expect(log.recovery.quarantined.count == 2)
        let frames = try readAll(log)
        #expect(frames.count == 79, "only the half frame is lost")
        #expect(frames.allSatisfy { $0.payload == payload(Int($0.sequence) - 1) })
        log.shutdown()
    }

    @Test func consumedSegmentsAreDeletedAndTheWatermarkSurvives() async throws {
        let scratch = ScratchDirectory()
        do {
            let log = try DurableLog(directory: scratch.path, options: .init(segmentSize: 4096))
            for index in 0..<100 { _ = try await log.append([payload(index)]) }
            let before = log.segmentCount
            log.discard(through: 70)
            #expect(log.segmentCount < before)
            #expect(try readAll(log, after: log.discardedThrough).first?.sequence == 71)
            log.shutdown()
        }
        let log = try DurableLog(directory: scratch.path, options: .init(segmentSize: 4096))
        #expect(log.discardedThrough == 70)
        #expect(try readAll(log, after: 70).map(\.sequence) == Array(71...100))
        log.discard(through: 100)
        #expect(log.segmentCount == 1)
        #expect(try await log.append([payload(100)]) == 101..<102)
        log.shutdown()
    }

    @Test func theNewestSegmentGoesOnceConsumedWhenTheNextAppendComes() async throws {
        let scratch = ScratchDirectory()
        // 50 frames of 100 bytes and their headers: over the 4,096 bytes worth a fresh segment.
        let log = try DurableLog(directory: scratch.path, options: .init(reclaimConsumedBytes: 4096))
        for index in 0..<50 { _ = try await log.append([payload(index)]) }
        let first = try #require(scratch.segmentFiles.first)
        log.discard(through: 50)
        #expect(try await log.append([payload(50)]) == 51..<52)
        #expect(!scratch.segmentFiles.contains(first), "its space comes back")
        #expect(scratch.segmentFiles.count == 1)
        #expect(try readAll(log, after: 50).map(\.sequence) == [51])
        log.shutdown()
        let reopened = try DurableLog(directory: scratch.path)
        #expect(try readAll(reopened, after: reopened.discardedThrough).map(\.sequence) == [51])
        reopened.shutdown()
    }

    /// A log read as fast as it is written is consumed after nearly every append: the newest
    /// segment is not replaced (a directory sync each time) until it is worth it.
    @Test func aSmallConsumedNewestSegmentIsWrittenOn() async throws {
        let scratch = ScratchDirectory()
        let log = try DurableLog(directory: scratch.path, options: .init(reclaimConsumedBytes: 4096))
        for index in 0..<10 {
            _ = try await log.append([payload(index)])
            log.discard(through: UInt64(index + 1))
        }
        let first = try #require(scratch.segmentFiles.first)
        #expect(scratch.segmentFiles == [first])
        #expect(log.diskBytes < 4096)
        #expect(try readAll(log, after: log.discardedThrough).isEmpty)
        for index in 10..<50 {
            _ = try await log.append([payload(index)])
            log.discard(through: UInt64(index + 1))
        }
        #expect(!scratch.segmentFiles.contains(first), "replaced once it held 4,096 bytes")
        #expect(log.diskBytes < 4096)
        log.shutdown()
        let reopened = try DurableLog(directory: scratch.path, options: .init(reclaimConsumedBytes: 4096))
        #expect(reopened.discardedThrough == 50)
        #expect(try readAll(reopened, after: 50).isEmpty)
        #expect(try await reopened.append([payload(50)]) == 51..<52)
        reopened.shutdown()
    }

    @Test func anEmptiedLogContinuesItsNumbering() async throws {
        let scratch = ScratchDirectory()
        do {
            let log = try DurableLog(directory: scratch.path, options: .init(segmentSize: 1024))
            for index in 0..<30 { _ = try await log.append([payload(index)]) }
            log.discard(through: 30)
            log.shutdown()
        }
        let log = try DurableLog(directory: scratch.path, options: .init(segmentSize: 1024))
        #expect(try await log.append([payload(30)]) == 31..<32)
        log.shutdown()
    }

    @Test func blockingAppendsAreDurableToo() async throws {
        let scratch = ScratchDirectory()
        let log = try DurableLog(directory: scratch.path)
        #expect(try log.appendBlocking([payload(0), payload(1)]) == 1..<3)
        #expect(try readAll(log).count == 2)
        log.shutdown()
        #expect(throws: DurableLogError.closed) { try log.appendBlocking([payload(2)]) }
    }

    @Test func aFrameOverTheLimitIsRefused() async throws {
        let scratch = ScratchDirectory()
        let log = try DurableLog(directory: scratch.path, options: .init(maximumFrameSize: 1000))
        await #expect(throws: DurableLogError.frameTooLarge(size: 1001, limit: 1000)) {
            try await log.append([[UInt8](repeating: 1, count: 1001)])
        }
        log.shutdown()
    }

    @Test func readsFromAnyCursorAgreeWithTheFramesWhileReadingForwardAndDiscarding() async throws {
        let scratch = ScratchDirectory()
        let log = try DurableLog(directory: scratch.path, options: .init(segmentSize: 4096, reclaimConsumedBytes: 0))
        for index in 0..<300 { _ = try await log.append([payload(index)]) }
        #expect(log.segmentCount > 5)
        #expect(try log.read(after: 0, maximumFrames: 1).map(\.sequence) == [1])
        // Forward in small pages (each read starts where the one before ended), with reads from
        // other cursors in between: the head, a cursor behind, the middle of a segment.
        var cursor: UInt64 = 0
        var forward: [UInt64] = []
        while let page = try? log.read(after: cursor, maximumFrames: 7), let last = page.last {
            forward += page.map(\.sequence)
            cursor = last.sequence
            let behind = cursor / 2
            #expect(try log.read(after: behind, maximumFrames: 3).map(\.sequence) == Array((behind + 1)...(behind + 3)))
            if cursor % 50 < 7 { log.discard(through: cursor / 2) }
            let head = log.discardedThrough
            #expect(try log.read(after: head, maximumFrames: 2).map(\.sequence) == [head + 1, head + 2])
        }
        #expect(forward == Array(1...300))
        let head = Int(log.discardedThrough)
        #expect(head > 100)
        #expect(try readAll(log, after: UInt64(head)).map(\.payload) == (head..<300).map { payload($0) })
        // Everything consumed: the next append starts a new newest segment (at once, with
        // reclaimConsumedBytes 0); reads find it.
        log.discard(through: 300)
        _ = try await log.append([payload(300)])
        #expect(try log.read(after: 300).map(\.payload) == [payload(300)])
        #expect(try log.read(after: 299).map(\.sequence) == [301])
        log.shutdown()
    }

    @Test func theDirectoryIsPrivate() throws {
        let scratch = ScratchDirectory()
        let log = try DurableLog(directory: scratch.path + "/nested/log")
        var info = stat()
        #expect(stat(scratch.path + "/nested/log", &info) == 0)
        #expect(info.st_mode & 0o777 == 0o700)
        log.shutdown()
    }
}

private func append(_ bytes: [UInt8], toFile path: String) throws {
    let handle = try #require(FileHandle(forWritingAtPath: path))
    handle.seekToEndOfFile()
    handle.write(Data(bytes))
    try handle.close()
}

private func overwrite(_ path: String, at offset: UInt64, with bytes: [UInt8]) throws {
    let handle = try #require(FileHandle(forWritingAtPath: path))
    try handle.seek(toOffset: offset)
    handle.write(Data(bytes))
    try handle.close()
}

private func fileSize(_ path: String) throws -> Int {
    try #require(FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
}
