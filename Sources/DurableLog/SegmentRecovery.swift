import FoundationEssentials
import Glibc

/// Reads the frames of one segment in pieces (never the whole file in memory).
enum SegmentReader {
    /// The piece read at a time when walking whole segments (opening a log).
    static let chunkSize = 1 << 20
    /// The piece read at a time when reading frames from a known position: about what a
    /// reader asks for, not a megabyte for a few frames (a larger frame is read whole).
    static let readChunkSize = 64 << 10

    /// Calls `body` with each whole frame after `sequence` in `segment`, in order, and the
    /// offset where the frame ends, until it returns false (then this returns true: the caller
    /// has what it wanted). The walk starts at `start`, which must be where a frame begins.
    static func read(
        _ segment: DurableLog.Segment, after sequence: UInt64, from start: Int = 0,
        _ body: (DurableLog.Frame, _ end: Int) -> Bool
    ) throws(DurableLogError) -> Bool {
        let file = open(segment.path, O_RDONLY | O_CLOEXEC)
        // A segment deleted since the list was taken holds only consumed frames.
        guard file >= 0 else { return false }
        defer { close(file) }
        var stopped = false
        try scan(file, path: segment.path, size: segment.size, from: start, chunkSize: readChunkSize) {
            header, payload, offset in
            guard header.sequence > sequence else { return true }
            let frame = DurableLog.Frame(sequence: header.sequence, payload: Array(payload))
            if !body(frame, offset + FrameLayout.headerSize + header.length) {
                stopped = true
                return false
            }
            return true
        }
        return stopped
    }

    /// Walks the frames of the first `size` bytes of `file`, which are known to be whole, from
    /// `start` (where a frame begins), reading `chunkSize` bytes at a time (more for a larger
    /// frame); `body` gets each frame's header, payload and offset, and returns false to stop.
    static func scan(
        _ file: Int32, path: String, size: Int, from start: Int = 0, chunkSize: Int = chunkSize,
        _ body: (FrameLayout.Header, UnsafeRawBufferPointer, Int) -> Bool
    ) throws(DurableLogError) {
        var chunkStart = start
        var chunk: [UInt8] = []
        var position = start
        while position < size {
            // Make sure the chunk holds the whole frame at `position`.
            if position + FrameLayout.headerSize > chunkStart + chunk.count {
                chunkStart = position
                chunk = try FileSystem.read(file, path: path, offset: position, count: min(chunkSize, size - position))
            }
            let header = chunk.withUnsafeBytes { FrameLayout.Header($0, at: position - chunkStart) }
            let end = position + FrameLayout.headerSize + header.length
            guard header.magic == FrameLayout.magic, end <= size else { return }
            if end > chunkStart + chunk.count {
                chunkStart = position
                chunk = try FileSystem.read(
                    file, path: path, offset: position, count: max(min(chunkSize, size - position), end - position))
            }
            let keepGoing = chunk.withUnsafeBytes { bytes in
                let payloadStart = position - chunkStart + FrameLayout.headerSize
                return body(
                    header, UnsafeRawBufferPointer(rebasing: bytes[payloadStart..<(payloadStart + header.length)]),
                    position)
            }
            if !keepGoing { return }
            position = end
        }
    }
}

/// Opening a log: every segment's frames are checked; a torn frame at the very end is cut off,
/// other unreadable bytes are moved to `quarantine/`, and every readable frame is kept.
enum SegmentRecovery {
    struct Result {
        var segments: [DurableLog.Segment]
        var report: DurableLog.RecoveryReport
        /// The highest sequence seen, also in segments that turned out empty.
        var highestSequence: UInt64
    }

    static func recover(directory: String, maximumFrameSize: Int) throws(DurableLogError) -> Result {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .compactMap { name in FileSystem.firstSequence(ofSegmentNamed: name).map { (name, $0) } }
            .sorted { $0.1 < $1.1 }
        var result = Result(segments: [], report: DurableLog.RecoveryReport(), highestSequence: 0)
        for (index, (name, first)) in names.enumerated() {
            let path = directory + "/" + name
            let isNewest = index == names.count - 1
            var segment = DurableLog.Segment(firstSequence: first, lastSequence: first - 1, path: path, size: 0)
            try check(
                &segment, isNewest: isNewest, directory: directory, after: result.highestSequence,
                maximumFrameSize: maximumFrameSize, report: &result.report)
            result.highestSequence = max(result.highestSequence, segment.lastSequence, first - 1)
            if segment.size == 0, !isNewest {
                // Nothing readable is left in it.
                unlink(path)
                continue
            }
            result.segments.append(segment)
        }
        return result
    }

    /// Checks one segment, fixing it in place: on return it holds whole frames only.
    private static func check(
        _ segment: inout DurableLog.Segment, isNewest: Bool, directory: String, after previous: UInt64,
        maximumFrameSize: Int,
        report: inout DurableLog.RecoveryReport
    ) throws(DurableLogError) {
        let file = open(segment.path, O_RDWR | O_CLOEXEC)
        guard file >= 0 else { throw .cannotOpen(FileSystem.describeErrno("cannot open \(segment.path)")) }
        defer { close(file) }
        var info = stat()
        guard fstat(file, &info) == 0 else {
            throw .cannotOpen(FileSystem.describeErrno("cannot read \(segment.path)"))
        }
        let size = Int(info.st_size)
        // The common case: every frame whole, checked in pieces.
        var lastSequence = max(previous, segment.firstSequence - 1)
        var goodEnd = 0
        var frames = 0
        try SegmentReader.scan(file, path: segment.path, size: size) { header, payload, offset in
            guard header.length <= maximumFrameSize, header.sequence > lastSequence, verify(header, payload) else {
                return false
            }
            lastSequence = header.sequence
            goodEnd = offset + FrameLayout.headerSize + header.length
            frames += 1
            return true
        }
        report.frames += frames
        if goodEnd == size {
            segment.size = size
            segment.lastSequence = frames > 0 ? lastSequence : segment.firstSequence - 1
            return
        }
        // Something unreadable from `goodEnd` on: look for readable frames after it.
        let rest = try FileSystem.read(file, path: segment.path, offset: goodEnd, count: size - goodEnd)
        var kept: [UInt8] = []
        var badStart: Int? = 0
        var position = 0
        var spans: [(Int, Int)] = []
        rest.withUnsafeBytes { bytes in
            while position + FrameLayout.headerSize <= bytes.count {
                let header = FrameLayout.Header(bytes, at: position)
                let end = position + FrameLayout.headerSize + header.length
                if header.magic == FrameLayout.magic, header.length <= maximumFrameSize, end <= bytes.count,
                    header.sequence > lastSequence,
                    header.matches(bytes, payloadOffset: position + FrameLayout.headerSize)
                {
                    if let start = badStart, start < position { spans.append((start, position)) }
                    badStart = nil
                    kept.append(contentsOf: bytes[position..<end])
                    lastSequence = header.sequence
                    frames += 1
                    report.frames += 1
                    position = end
                } else {
                    if badStart == nil { badStart = position }
                    position += 1
                }
            }
        }
        if let start = badStart ?? (position < rest.count ? position : nil) { spans.append((start, rest.count)) }
        for (start, end) in spans {
            // A crash while writing leaves, at the very end of the newest segment, part of a
            // header or a header whose frame runs past the end: cut off, not kept.
            let isTornTail =
                isNewest && end == rest.count && start == spans.last?.0
                && isTornFrame(rest, at: start, maximumFrameSize: maximumFrameSize)
            if isTornTail {
                report.truncatedBytes += end - start
            } else {
                let quarantine = directory + "/quarantine"
                _ = mkdir(quarantine, 0o700)
                let path = quarantine + "/" + FileSystem.lastComponent(of: segment.path) + ".\(goodEnd + start).bin"
                if FileSystem.replace(path, with: Array(rest[start..<end]), sync: true) {
                    report.quarantined.append(DurableLog.QuarantinedSpan(path: path, bytes: end - start))
                } else {
                    throw .cannotOpen(
                        FileSystem.describeErrno("cannot move unreadable bytes of \(segment.path) to \(path)"))
                }
            }
        }
        // The segment becomes its good prefix followed by the frames found after the damage.
        if kept.isEmpty {
            guard ftruncate(file, off_t(goodEnd)) == 0 else {
                throw .cannotOpen(FileSystem.describeErrno("cannot repair \(segment.path)"))
            }
            _ = fdatasync(file)
        } else {
            let prefix = try FileSystem.read(file, path: segment.path, offset: 0, count: goodEnd)
            guard FileSystem.replace(segment.path, with: prefix + kept, sync: true) else {
                throw .cannotOpen(FileSystem.describeErrno("cannot repair \(segment.path)"))
            }
        }
        segment.size = goodEnd + kept.count
        segment.lastSequence = frames > 0 ? lastSequence : segment.firstSequence - 1
    }

    /// Whether the bytes from `start` to the end are the beginning of one frame.
    private static func isTornFrame(_ bytes: [UInt8], at start: Int, maximumFrameSize: Int) -> Bool {
        let remaining = bytes.count - start
        guard remaining >= FrameLayout.headerSize else { return true }
        let header = bytes.withUnsafeBytes { FrameLayout.Header($0, at: start) }
        return header.magic == FrameLayout.magic && header.length <= maximumFrameSize
            && FrameLayout.headerSize + header.length > remaining
    }

    private static func verify(_ header: FrameLayout.Header, _ payload: UnsafeRawBufferPointer) -> Bool {
        var sequenceBytes = header.sequence.littleEndian
        let computed = withUnsafeBytes(of: &sequenceBytes) { CRC32C.checksum(payload, continuing: CRC32C.checksum($0)) }
        return computed == header.checksum
    }
}
