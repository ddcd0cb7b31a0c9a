import AsyncPrimitives
import Dispatch
import FoundationEssentials
import Glibc
import NIOConcurrencyHelpers

/// A durable, append-only log of frames on disk: the storage under the telemetry outbox and
/// the cloud-to-device inbox.
///
/// - An append returns once its frames are on disk (`fdatasync`), written in one piece: after a
///   crash or a power loss a frame is there whole or not at all.
/// - Appends from many callers share one `fdatasync` (group commit): a writer thread takes
///   everything queued, writes it, syncs once and answers each caller, in the order written;
///   what is queued meanwhile is the next group.
/// - Frames are numbered 1, 2, 3, … and kept in segment files of about ``Options/segmentSize``
///   bytes; ``discard(through:)`` lets whole segments go once their frames are consumed.
/// - Opening checks every frame's checksum: a torn frame at the end is cut off, anything else
///   unreadable is moved to `quarantine/` and reported; every readable frame is kept.
///
/// Reading and recovery use blocking file I/O: call them off Swift's cooperative pool (the
/// outbox and inbox use their own queue). See docs/ARCHITECTURE.md, "Store and forward".
public final class DurableLog: Sendable {
    public struct Options: Sendable {
        /// Segment files are rolled over beyond this size.
        public var segmentSize: Int
        /// The largest payload a frame may carry.
        public var maximumFrameSize: Int
        /// A newest segment whose frames have all been consumed is replaced by a fresh one,
        /// giving its space back, once it holds this many bytes (and at once after a write
        /// found the disk full). Not for every few frames: a new segment costs a directory sync,
        /// and a log that is read as fast as it is written would pay one for every append.
        public var reclaimConsumedBytes: Int

        public init(
            segmentSize: Int = 16 << 20, maximumFrameSize: Int = 64 << 20, reclaimConsumedBytes: Int = 256 << 10
        ) {
            self.segmentSize = segmentSize
            self.maximumFrameSize = maximumFrameSize
            self.reclaimConsumedBytes = reclaimConsumedBytes
        }
    }

    /// One frame read back.
    public struct Frame: Sendable, Equatable {
        public var sequence: UInt64
        public var payload: [UInt8]
    }

    /// What opening found and did.
    public struct RecoveryReport: Sendable, Equatable {
        /// Frames found intact.
        public var frames = 0
        /// Bytes of a torn frame cut off the end of the newest segment (a crash mid-write).
        public var truncatedBytes = 0
        /// Unreadable spans moved out of the segments, with where they went.
        public var quarantined: [QuarantinedSpan] = []

        public var isClean: Bool { truncatedBytes == 0 && quarantined.isEmpty }
    }

    public struct QuarantinedSpan: Sendable, Equatable {
        /// The file the bytes were moved to.
        public var path: String
        public var bytes: Int
    }

    struct Segment: Sendable {
        var firstSequence: UInt64
        /// The last frame's sequence; `firstSequence - 1` while empty.
        var lastSequence: UInt64
        var path: String
        /// Bytes on disk, all of them whole frames.
        var size: Int
    }

    private struct PendingAppend {
        var payloads: [[UInt8]]
        var completion: @Sendable (Result<Range<UInt64>, DurableLogError>) -> Void
    }

    private struct State {
        /// The segments as readers see them: every frame in them is synced.
        var segments: [Segment]
        var nextSequence: UInt64
        var discardedThrough: UInt64
        var pending: [PendingAppend] = []
        var closed = false
        /// `fdatasync` calls made for appends (group commit makes it far fewer than appends).
        var syncs = 0
        /// A write or sync failed for want of space since the newest segment was last replaced.
        var spaceRanOut = false

        /// Whether the newest segment should be replaced by a fresh one before the next write
        /// (see ``Options/reclaimConsumedBytes``).
        func newestSegmentIsReclaimable(_ options: Options) -> Bool {
            guard let newest = segments.last, newest.size > 0, newest.lastSequence <= discardedThrough else {
                return false
            }
            return newest.size >= options.reclaimConsumedBytes || spaceRanOut
        }
    }

    public let directory: String
    public let options: Options
    /// What opening found.
    public let recovery: RecoveryReport
    private let state: NIOLockedValueBox<State>
    private let wakeWriter = DispatchSemaphore(value: 0)
    private let writerFinished = DispatchSemaphore(value: 0)
    /// The newest segment's file, open for appending; used by the writer thread only.
    private let activeFile: NIOLockedValueBox<Int32>
    /// Where recently read frames end (the next frame of their segment begins there), by
    /// sequence: a read after one of them starts there instead of walking the segment from its
    /// beginning, so reading a log in order stays linear.
    private let frameEnds = NIOLockedValueBox<[UInt64: FrameEnd]>([:])
    /// Where ``discardedThrough`` is kept.
    private let watermark: WatermarkFile

    private struct FrameEnd {
        /// The segment, by its first sequence.
        var segment: UInt64
        var offset: Int
    }

    /// Frame ends remembered: those of the newest frames read (the delivery loop's pages in
    /// flight and the head of the log are among them).
    private static let frameEndsKept = 2048

    /// Opens (creating if needed, mode 0700) the log in `directory` and recovers it.
    public init(directory: String, options: Options = Options()) throws(DurableLogError) {
        self.directory = directory
        self.options = options
        self.watermark = WatermarkFile(directory: directory)
        try FileSystem.createPrivateDirectory(directory)
        var recovered = try SegmentRecovery.recover(directory: directory, maximumFrameSize: options.maximumFrameSize)
        let discarded = WatermarkFile.read(directory: directory)
        if recovered.segments.isEmpty {
            let first = max(discarded, recovered.highestSequence) + 1
            recovered.segments = [try FileSystem.createSegment(directory: directory, firstSequence: first)]
        }
        let last = recovered.segments[recovered.segments.count - 1]
        recovery = recovered.report
        activeFile = NIOLockedValueBox(try FileSystem.openForAppending(last.path))
        state = NIOLockedValueBox(
            State(segments: recovered.segments, nextSequence: last.lastSequence + 1, discardedThrough: discarded))
        DedicatedThread.start(name: "durable-log-writer") { [self] in
            runWriter()
            writerFinished.signal()
        }
    }

    deinit {
        close(activeFile.withLockedValue { $0 })
    }

    // MARK: Appending

    /// Appends one frame per payload, in order, and returns their sequence numbers once all are
    /// on disk. The frames of one call are written together, next to each other.
    ///
    /// `whenStored`, if given, gets the sequences on the writer thread as soon as they are on
    /// disk, before this returns: such calls come in the order the frames were written.
    public func append(
        _ payloads: [[UInt8]], whenStored: (@Sendable (Range<UInt64>) -> Void)? = nil
    ) async throws(DurableLogError) -> Range<UInt64> {
        let result = await withCheckedContinuation {
            (continuation: CheckedContinuation<Result<Range<UInt64>, DurableLogError>, Never>) in
            enqueue(payloads) { result in
                if let whenStored, case .success(let sequences) = result { whenStored(sequences) }
                continuation.resume(returning: result)
            }
        }
        return try result.get()
    }

    /// ``append(_:)`` for a thread that may block (the MQTT network thread): returns once the
    /// frames are on disk.
    public func appendBlocking(_ payloads: [[UInt8]]) throws(DurableLogError) -> Range<UInt64> {
        let done = DispatchSemaphore(value: 0)
        let outcome = NIOLockedValueBox<Result<Range<UInt64>, DurableLogError>?>(nil)
        enqueue(payloads) { result in
            outcome.withLockedValue { $0 = result }
            done.signal()
        }
        done.wait()
        return try (outcome.withLockedValue { $0 } ?? .failure(.closed)).get()
    }

    /// Queues an append without waiting: `completion` is called (on the writer thread) once the
    /// frames are on disk, or with the failure. Appends are written in the order they are queued,
    /// so a caller that queues under its own lock gets its lock's order on disk.
    public func enqueueAppend(
        _ payloads: [[UInt8]], completion: @escaping @Sendable (Result<Range<UInt64>, DurableLogError>) -> Void
    ) {
        enqueue(payloads, completion: completion)
    }

    private func enqueue(
        _ payloads: [[UInt8]], completion: @escaping @Sendable (Result<Range<UInt64>, DurableLogError>) -> Void
    ) {
        if let tooLarge = payloads.first(where: { $0.count > options.maximumFrameSize }) {
            return completion(.failure(.frameTooLarge(size: tooLarge.count, limit: options.maximumFrameSize)))
        }
        let accepted = state.withLockedValue { state -> Bool in
            guard !state.closed else { return false }
            state.pending.append(PendingAppend(payloads: payloads, completion: completion))
            return true
        }
        guard accepted else { return completion(.failure(.closed)) }
        wakeWriter.signal()
    }

    // MARK: The writer thread

    /// Takes what is queued, writes and syncs it as one group, and again, until the log is
    /// closed and nothing is queued.
    private func runWriter() {
        while true {
            wakeWriter.wait()
            let (group, closing) = state.withLockedValue { state in
                defer { state.pending.removeAll() }
                return (state.pending, state.closed)
            }
            if !group.isEmpty { writeAndSync(group) }
            if closing && group.isEmpty { return }
        }
    }

    /// Writes a group of appends, syncs once, and answers each. An append that does not fit in
    /// the newest segment starts a new one (the full one is synced first). On a failure, appends
    /// already synced succeed, the others fail, and the newest segment is cut back to its last
    /// synced size, so it holds whole frames only.
    private func writeAndSync(_ group: [PendingAppend]) {
        reclaimConsumedNewestSegment()
        var (segment, nextSequence) = state.withLockedValue { ($0.segments[$0.segments.count - 1], $0.nextSequence) }
        var syncedSize = segment.size
        var finished: [Segment] = []
        var buffer: [UInt8] = []
        buffer.reserveCapacity(
            min(
                options.segmentSize,
                group.reduce(0) { total, append in
                    append.payloads.reduce(total) { $0 + FrameLayout.headerSize + $1.count }
                }))
        var ranges: [Range<UInt64>] = []
        ranges.reserveCapacity(group.count)
        var synced = 0
        var failure: DurableLogError?
        for append in group {
            let size = append.payloads.reduce(0) { $0 + FrameLayout.headerSize + $1.count }
            let used = segment.size + buffer.count
            if used > 0, used + size > options.segmentSize {
                if let error = flush(&buffer, into: &segment) {
                    failure = error
                    break
                }
                do {
                    try roll(from: &segment, firstSequence: nextSequence, finished: &finished)
                } catch {
                    failure = error
                    break
                }
                synced = ranges.count
                syncedSize = 0
            }
            let first = nextSequence
            for payload in append.payloads {
                FrameLayout.encode(payload, sequence: nextSequence, into: &buffer)
                nextSequence += 1
            }
            ranges.append(first..<nextSequence)
        }
        if failure == nil { failure = flush(&buffer, into: &segment) }
        if failure == nil {
            let file = activeFile.withLockedValue { $0 }
            let syncResult = fdatasync(file)
            if syncResult != 0 {
                failure = .writeFailed(
                    FileSystem.describeErrno("cannot sync \(segment.path)"), noSpace: errno == ENOSPC || errno == EDQUOT
                )
            }
            state.withLockedValue { $0.syncs += 1 }
            if syncResult == 0 {
                synced = ranges.count
                syncedSize = segment.size
            }
        }
        if let failure {
            noteFailure(failure)
            // Back to whole, synced frames (a cut that fails leaves a torn frame, which the next
            // opening cuts off).
            _ = ftruncate(activeFile.withLockedValue { $0 }, off_t(syncedSize))
            segment.size = syncedSize
            let lastSynced =
                synced > 0
                ? ranges[synced - 1].upperBound
                : (finished.isEmpty ? state.withLockedValue { $0.nextSequence } : segment.firstSequence)
            segment.lastSequence = max(segment.firstSequence, lastSynced) - 1
            nextSequence = segment.lastSequence + 1
        }
        state.withLockedValue { state in
            if finished.isEmpty {
                state.segments[state.segments.count - 1] = segment
            } else {
                state.segments[state.segments.count - 1] = finished[0]
                state.segments.append(contentsOf: finished.dropFirst())
                state.segments.append(segment)
            }
            state.nextSequence = nextSequence
        }
        for (index, append) in group.enumerated() {
            if index < synced {
                append.completion(.success(ranges[index]))
            } else {
                append.completion(.failure(failure ?? .closed))
            }
        }
    }

    /// When every frame of the newest segment has been consumed, starts a fresh segment and
    /// deletes the old one before writing, so that its space comes back (on a full disk, the
    /// append that needs it is the one that frees it).
    private func reclaimConsumedNewestSegment() {
        let consumed = state.withLockedValue { state -> (Segment, UInt64)? in
            guard state.newestSegmentIsReclaimable(options), let newest = state.segments.last else { return nil }
            return (newest, state.nextSequence)
        }
        guard let (old, nextSequence) = consumed,
            let fresh = try? FileSystem.createSegment(directory: directory, firstSequence: nextSequence),
            let file = try? FileSystem.openForAppending(fresh.path)
        else { return }
        let previous = activeFile.withLockedValue { active in
            defer { active = file }
            return active
        }
        close(previous)
        state.withLockedValue { state in
            state.segments.removeAll { $0.path == old.path }
            state.segments.append(fresh)
            state.spaceRanOut = false
        }
        unlink(old.path)
    }

    /// Remembers a failure for want of space: the next write replaces a consumed newest segment
    /// whatever its size, so that its space comes back.
    private func noteFailure(_ failure: DurableLogError) {
        if case .writeFailed(_, noSpace: true) = failure { state.withLockedValue { $0.spaceRanOut = true } }
    }

    /// Writes `buffer` to the newest segment and counts its frames there; returns the failure,
    /// if any (then the segment is left as it was counted).
    private func flush(_ buffer: inout [UInt8], into segment: inout Segment) -> DurableLogError? {
        guard !buffer.isEmpty else { return nil }
        if let error = FileSystem.writeAll(buffer, to: activeFile.withLockedValue({ $0 }), path: segment.path) {
            return error
        }
        segment.size += buffer.count
        // The last frame of the buffer has the highest sequence.
        var offset = 0
        buffer.withUnsafeBytes { bytes in
            while offset + FrameLayout.headerSize <= bytes.count {
                let header = FrameLayout.Header(bytes, at: offset)
                segment.lastSequence = header.sequence
                offset += FrameLayout.headerSize + header.length
            }
        }
        buffer.removeAll(keepingCapacity: true)
        return nil
    }

    /// Syncs and closes the newest segment and starts a new one at `firstSequence`.
    private func roll(from segment: inout Segment, firstSequence: UInt64, finished: inout [Segment])
        throws(DurableLogError)
    {
        let old = activeFile.withLockedValue { $0 }
        if fdatasync(old) != 0 {
            throw .writeFailed(
                FileSystem.describeErrno("cannot sync \(segment.path)"), noSpace: errno == ENOSPC || errno == EDQUOT)
        }
        let next = try FileSystem.createSegment(directory: directory, firstSequence: firstSequence)
        let file = try FileSystem.openForAppending(next.path)
        activeFile.withLockedValue { $0 = file }
        close(old)
        finished.append(segment)
        segment = next
    }

    // MARK: Reading

    /// Up to `maximumFrames` frames after `sequence` (and at least one, if there is one, however
    /// large), in order, at most about `maximumBytes` of payload. Blocking file I/O.
    public func read(after sequence: UInt64, maximumFrames: Int = .max, maximumBytes: Int = 1 << 20)
        throws(DurableLogError) -> [Frame]
    {
        let segments = state.withLockedValue { $0.segments }
        var frames: [Frame] = []
        var bytes = 0
        var ends: [(sequence: UInt64, end: FrameEnd)] = []
        for segment in segments where segment.lastSequence > sequence && segment.size > 0 {
            var start = frameEnds.withLockedValue { $0[sequence] }.flatMap {
                $0.segment == segment.firstSequence && $0.offset <= segment.size ? $0.offset : nil
            }
            var done = false
            while true {
                let found = frames.count
                done = try SegmentReader.read(segment, after: sequence, from: start ?? 0) { frame, end in
                    guard frames.count < maximumFrames, frames.isEmpty || bytes + frame.payload.count <= maximumBytes
                    else {
                        return false
                    }
                    bytes += frame.payload.count
                    frames.append(frame)
                    ends.append((frame.sequence, FrameEnd(segment: segment.firstSequence, offset: end)))
                    return true
                }
                // A remembered position that does not lead to the next frame is not trusted: the
                // segment is walked again from its beginning.
                guard start != nil, frames.count == found else { break }
                start = nil
            }
            if done { break }
        }
        if !ends.isEmpty {
            frameEnds.withLockedValue { remembered in
                for (sequence, end) in ends { remembered[sequence] = end }
                if remembered.count > 2 * Self.frameEndsKept, let highest = remembered.keys.max() {
                    remembered = remembered.filter { $0.key + UInt64(Self.frameEndsKept) > highest }
                }
            }
        }
        return frames
    }

    // MARK: Consuming

    /// Marks every frame up to `sequence` as consumed: segments holding only such frames are
    /// deleted, and a reopened log reports ``discardedThrough`` from here (kept in a small file,
    /// synced now and then: after a crash a little more than what was consumed may be read again).
    public func discard(through sequence: UInt64) {
        let doomed = state.withLockedValue { state -> [Segment]? in
            guard sequence > state.discardedThrough, state.nextSequence > 1 else { return nil }
            state.discardedThrough = min(sequence, state.nextSequence - 1)
            var doomed: [Segment] = []
            // The newest segment stays: appends go there.
            while state.segments.count > 1, state.segments[0].lastSequence <= state.discardedThrough {
                doomed.append(state.segments.removeFirst())
            }
            return doomed
        }
        guard let doomed else { return }
        // Synced before segments go: a reopened log must not look for frames in them.
        watermark.write({ self.discardedThrough }, sync: !doomed.isEmpty)
        for segment in doomed { unlink(segment.path) }
    }

    /// Frames up to here have been consumed.
    public var discardedThrough: UInt64 { state.withLockedValue { $0.discardedThrough } }

    /// The sequence of the newest frame on disk (0 before the first).
    public var lastSequence: UInt64 { state.withLockedValue { $0.nextSequence - 1 } }

    /// Bytes of all segment files.
    public var diskBytes: Int { state.withLockedValue { $0.segments.reduce(0) { $0 + $1.size } } }

    /// Segment files now.
    public var segmentCount: Int { state.withLockedValue { $0.segments.count } }

    /// `fdatasync` calls made for appends so far.
    public var syncCount: Int { state.withLockedValue { $0.syncs } }

    /// Finishes queued appends and stops the writer; later appends fail with `closed`.
    public func shutdown() {
        let first = state.withLockedValue { state -> Bool in
            defer { state.closed = true }
            return !state.closed
        }
        guard first else { return }
        wakeWriter.signal()
        writerFinished.wait()
        writerFinished.signal()
        watermark.write({ self.discardedThrough }, sync: true)
    }
}

/// Why the log could not do what was asked.
public enum DurableLogError: Error, Sendable, Equatable, CustomStringConvertible {
    case cannotOpen(String)
    /// Writing or syncing failed; `noSpace` when the file system is full (ENOSPC, EDQUOT).
    case writeFailed(String, noSpace: Bool)
    case frameTooLarge(size: Int, limit: Int)
    case closed

    public var description: String {
        switch self {
        case .cannotOpen(let detail): detail
        case .writeFailed(let detail, _): detail
        case .frameTooLarge(let size, let limit): "a frame of \(size) bytes is larger than the \(limit) bytes allowed"
        case .closed: "the log is closed"
        }
    }
}
