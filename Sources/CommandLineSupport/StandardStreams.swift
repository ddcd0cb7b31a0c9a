#if canImport(Glibc)
    import Glibc
#endif

/// Standard input and error as the commands use them, through the system calls rather than
/// Foundation's `FileHandle`, which would link CoreFoundation and ICU's data into the program
/// (docs/PERFORMANCE.md, "Footprint").
package enum StandardStreams {
    /// Writes `text` to standard error, all of it: one `write` for a line (so lines written by
    /// several threads do not interleave), more only if the system takes less.
    package static func writeError(_ text: String) {
        Array(text.utf8).withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(STDERR_FILENO, buffer.baseAddress.map { $0 + offset }, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return
                }
                offset += written
            }
        }
    }

    /// Everything on standard input, up to its end; nil when it cannot be read.
    package static func readInput() -> [UInt8]? {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 14)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if count == 0 { return bytes }
            bytes += chunk[..<count]
        }
    }
}
