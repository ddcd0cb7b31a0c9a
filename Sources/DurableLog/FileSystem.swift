import Foundation

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
        var bytes = [UInt8](repeating: 0, count: count)
        var filled = 0
        let failure = bytes.withUnsafeMutableBytes { buffer -> Bool in
            while filled < count {
                let got = pread(file, buffer.baseAddress.map { $0 + filled }, count - filled, off_t(offset + filled))
                if got < 0 {
                    if errno == EINTR { continue }
                    return true
                }
                if got == 0 { break }
                filled += got
            }
            return false
        }
        if failure { throw .cannotOpen(describeErrno("cannot read \(path)")) }
        if filled < count { bytes.removeLast(count - filled) }
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
enum WatermarkFile {
    static func read(directory: String) -> UInt64 {
        guard let bytes = try? FileSystem.readAll(directory + "/discarded") else { return 0 }
        return UInt64(String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

    static func write(_ sequence: UInt64, directory: String, sync: Bool) {
        _ = FileSystem.replace(directory + "/discarded", with: Array("\(sequence)\n".utf8), sync: sync)
    }
}
