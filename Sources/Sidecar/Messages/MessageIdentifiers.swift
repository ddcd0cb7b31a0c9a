import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Message ids for messages sent without one: random UUIDs (version 4, lower case).
///
/// Foundation's `UUID()` asks the kernel for 16 random bytes each time (a system call per
/// message); here the random bytes come from the kernel's generator 4 KiB at a time, so a batch
/// of 100 messages costs one system call or none.
enum MessageIdentifiers {
    private struct Pool {
        var bytes = [UInt8](repeating: 0, count: 4096)
        var offset = 4096
    }

    private static let pool = NIOLockedValueBox(Pool())

    /// A new random id, e.g. `1b4e28ba-2fa1-41d2-883f-0016d3cca427`.
    static func next() -> String {
        var random: (UInt64, UInt64) = pool.withLockedValue { pool in
            if pool.offset + 16 > pool.bytes.count {
                pool.bytes.withUnsafeMutableBytes { fillRandom($0) }
                pool.offset = 0
            }
            defer { pool.offset += 16 }
            return pool.bytes.withUnsafeBytes { bytes in
                (
                    bytes.loadUnaligned(fromByteOffset: pool.offset, as: UInt64.self),
                    bytes.loadUnaligned(fromByteOffset: pool.offset + 8, as: UInt64.self)
                )
            }
        }
        return withUnsafeMutableBytes(of: &random) { bytes in
            bytes[6] = bytes[6] & 0x0F | 0x40  // version 4
            bytes[8] = bytes[8] & 0x3F | 0x80  // RFC 4122 variant
            return format(UnsafeRawBufferPointer(bytes))
        }
    }

    /// `8-4-4-4-12` lower-case hexadecimal digits of 16 bytes.
    static func format(_ bytes: UnsafeRawBufferPointer) -> String {
        let digits: StaticString = "0123456789abcdef"
        return String(unsafeUninitializedCapacity: 36) { output in
            digits.withUTF8Buffer { hex in
                var written = 0
                for index in 0..<16 {
                    if index == 4 || index == 6 || index == 8 || index == 10 {
                        output[written] = UInt8(ascii: "-")
                        written += 1
                    }
                    output[written] = hex[Int(bytes[index] >> 4)]
                    output[written + 1] = hex[Int(bytes[index] & 0x0F)]
                    written += 2
                }
                return written
            }
        }
    }

    private static func fillRandom(_ buffer: UnsafeMutableRawBufferPointer) {
        // glibc ≥ 2.36 and Darwin: one getrandom(2) (or equivalent) for the whole buffer.
        if let base = buffer.baseAddress { arc4random_buf(base, buffer.count) }
    }
}
