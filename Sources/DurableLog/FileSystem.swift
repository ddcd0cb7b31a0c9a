import Glibc
import NIOConcurrencyHelpers

/// Creates directories the way the log does, for the state that lives next to it.
public enum PrivateDirectory {
    /// Creates `path` (and its parents) if missing, mode 0700 for what is created, and checks it
    /// is a directory this process can list and write.
    public static func create(_ path: String) throws(DurableLogError) {
        try FileSystem.createPrivateDirectory(path)
    }
}

/// The few file operations the log makes, with errors that say what failed.
enum FileSystem {
    static func describeErrno(_ what: String) -> String {
        "\(what): \(String(cString: strerror(errno)))"
    }

    /// Creates `path` (and its parents) if missing, mode 0700 for what is created, and checks it
    /// is a directory this process can list and write.
    static func createPrivateDirectory(_ path: String) throws(DurableLogError) {
        var components: [String] = []
        var current = path
        while !current.isEmpty, current != "/", access(current, F_OK) != 0 {
            components.append(current)
            current = parentDirectory(of: current)
        }
        for component in components.reversed() where mkdir(component, 0o700) != 0 && errno != EEXIST {
            throw .cannotOpen(describeErrno("cannot create the directory \(component)"))
        }
        var info = stat()
        guard stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
            throw .cannotOpen("\(path) is not a directory")
        }
        guard access(path, R_OK | W_OK | X_OK) == 0 else {
            throw .cannotOpen(describeErrno("cannot read and write in \(path)"))
        }
    }

    /// `path` without its last component: "/a/b/" → "/a", "/a" → "/", "a" → "". String work
    /// only: Foundation's `NSString` would link CoreFoundation and, through it, ICU's data into
    /// the program (docs/PERFORMANCE.md, "Footprint").
    static func parentDirectory(of path: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1, trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return "" }
        return slash == trimmed.startIndex ? "/" : String(trimmed[..<slash])
    }

    /// The last component of `path` ("/a/b" → "b").
    static func lastComponent(of path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }

    static func segmentName(firstSequence: UInt64) -> String {
        let digits = String(firstSequence)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".log"
    }

    static func firstSequence(ofSegmentNamed name: String) -> UInt64? {
        guard name.hasSuffix(".log"), name.utf8.count == 24 else { return nil }
        return UInt64(name.dropLast(4))
    }

    /// Creates an empty segment (and makes its name durable: the directory is synced).
    static func createSegment(directory: String, firstSequence: UInt64) throws(DurableLogError) -> DurableLog.Segment {
        let path = directory + "/" + segmentName(firstSequence: firstSequence)
        let file = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard file >= 0 else { throw .cannotOpen(describeErrno("cannot create \(path)")) }
        close(file)
        syncDirectory(directory)
        return DurableLog.Segment(firstSequence: firstSequence, lastSequence: firstSequence - 1, path: path, size: 0)
    }

    static func openForAppending(_ path: String) throws(DurableLogError) -> Int32 {
        let file = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard file >= 0 else { throw .cannotOpen(describeErrno("cannot open \(path)")) }
        return file
    }

    static func syncDirectory(_ directory: String) {
        let file = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard file >= 0 else { return }
        _ = fsync(file)
        close(file)
    }

    /// Writes all of `bytes`; the failure, if any.
    static func writeAll(_ bytes: [UInt8], to file: Int32, path: String) -> DurableLogError? {
        bytes.withUnsafeBytes { buffer -> DurableLogError? in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(file, buffer.baseAddress.map { $0 + offset }, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return .writeFailed(
                        describeErrno("cannot write \(path)"), noSpace: errno == ENOSPC || errno == EDQUOT)
                }
                offset += written
            }
            return nil
        }
    }

    /// All of a file's bytes (segments are read whole when recovering and in pieces when reading).
    static func readAll(_ path: String) throws(DurableLogError) -> [UInt8] {
        let file = open(path, O_RDONLY | O_CLOEXEC)
        guard file >= 0 else { throw .cannotOpen(describeErrno("cannot open \(path)")) }
        defer { close(file) }
        var info = stat()
        guard fstat(file, &info) == 0 else { throw .cannotOpen(describeErrno("cannot read \(path)")) }
        return try read(file, path: path, offset: 0, count: Int(info.st_size))
    }

    /// `count` bytes (fewer at the end of the file) from `offset`.
    static func read(_ file: Int32, path: String, offset: Int, count: Int) throws(DurableLogError) -> [UInt8] {
        var failure: String?
        // Not zeroed first: the array holds exactly the bytes read.
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            var filled = 0
            while filled < count {
                let got = pread(file, buffer.baseAddress.map { $0 + filled }, count - filled, off_t(offset + filled))
                if got < 0 {
                    if errno == EINTR { continue }
                    failure = describeErrno("cannot read \(path)")
                    break
                }
                if got == 0 { break }
                filled += got
            }
            initialized = filled
        }
        if let failure { throw .cannotOpen(failure) }
        return bytes
    }

    /// Replaces `path` with `bytes`, durably (a temporary file, synced, renamed over it).
    static func replace(_ path: String, with bytes: [UInt8], sync: Bool) -> Bool {
        let temporary = path + ".tmp"
        let file = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard file >= 0 else { return false }
        let written = writeAll(bytes, to: file, path: temporary) == nil
        if sync { _ = fdatasync(file) }
        close(file)
        guard written, rename(temporary, path) == 0 else {
            unlink(temporary)
            return false
        }
        if sync { syncDirectory(parentDirectory(of: path)) }
        return true
    }
}

/// The sequence number up to which frames were consumed (``DurableLog/discard(through:)``),
/// kept as text in `<directory>/discarded`.
///
/// Written in place: one `pwrite` of a fixed-width number (20 digits and a newline) into a
/// file kept open, synced only when asked. The log marks what it consumed after every page a
/// reader finishes; a temporary file and a rename each time cost more kernel time than the
/// rest of accepting and delivering a message. A write this small lands whole or not at all
/// (one sector; a process that is killed either made the call or did not); a mark that is lost
/// only makes a reopened log read a little more again.
final class WatermarkFile: Sendable {
    private let path: String
    private let directory: String
    /// The open file, or -1 before the first write; writes are serialised here so that the mark
    /// on disk never goes back.
    private let file = NIOLockedValueBox<Int32>(-1)

    init(directory: String) {
        self.directory = directory
        self.path = directory + "/discarded"
    }

    deinit {
        let file = file.withLockedValue { $0 }
        if file >= 0 { close(file) }
    }

    static func read(directory: String) -> UInt64 {
        guard let bytes = try? FileSystem.readAll(directory + "/discarded") else { return 0 }
        let digits = bytes.drop { $0 == UInt8(ascii: "0") }.prefix {
            (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
        }
        return digits.isEmpty ? 0 : UInt64(String(decoding: digits, as: UTF8.self)) ?? 0
    }

    /// Writes `sequence()` (read under the write lock, so that racing writers keep the mark
    /// moving forward); with `sync`, on disk before this returns. Returns whether it was written.
    @discardableResult
    func write(_ sequence: () -> UInt64, sync: Bool) -> Bool {
        file.withLockedValue { file in
            if file < 0 {
                var created = true
                var opened = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                if opened < 0, errno == EEXIST {
                    created = false
                    opened = open(path, O_RDWR | O_CLOEXEC)
                }
                guard opened >= 0 else { return false }
                // Every mark has the same width: whatever lies beyond it (a damaged file) goes
                // once, here, not with every write.
                _ = ftruncate(opened, off_t(Self.width))
                file = opened
                // Its name must survive a crash as well as its content.
                if created { FileSystem.syncDirectory(directory) }
            }
            let text = Self.fixedWidth(sequence())
            let written = text.withUnsafeBytes { pwrite(file, $0.baseAddress, $0.count, 0) }
            guard written == text.count else { return false }
            if sync { return fdatasync(file) == 0 }
            return true
        }
    }

    /// The bytes of a mark: 20 digits (`UInt64.max` has 20) and a newline.
    static let width = 21

    /// `sequence` as 20 decimal digits (zeros in front) and a newline.
    static func fixedWidth(_ sequence: UInt64) -> [UInt8] {
        var text = [UInt8](repeating: UInt8(ascii: "0"), count: width)
        text[width - 1] = UInt8(ascii: "\n")
        var value = sequence
        var index = width - 2
        while value > 0 {
            text[index] = UInt8(ascii: "0") + UInt8(value % 10)
            value /= 10
            index -= 1
        }
        return text
    }
}
