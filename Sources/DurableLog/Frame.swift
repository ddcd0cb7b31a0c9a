/// How a frame is laid out on disk (little-endian):
///
///     magic     4 bytes   "IDL1"
///     length    4 bytes   the payload's length
///     checksum  4 bytes   CRC-32C of the sequence number and the payload
///     sequence  8 bytes   the frame's sequence number (1, 2, 3, … across segments)
///     payload   length bytes
///
/// A frame is written in one piece and is the unit of atomicity: after a crash it is either
/// whole (its checksum matches) or it is not there.
enum FrameLayout {
    static let magic: UInt32 = 0x314C_4449  // "IDL1" read little-endian
    static let headerSize = 20

    /// The frame for `payload` at `sequence`, appended to `buffer`.
    static func encode(_ payload: [UInt8], sequence: UInt64, into buffer: inout [UInt8]) {
        var sequenceBytes = sequence.littleEndian
        let checksum = withUnsafeBytes(of: &sequenceBytes) { sequencePart in
            payload.withUnsafeBytes { CRC32C.checksum($0, continuing: CRC32C.checksum(sequencePart)) }
        }
        append(magic, to: &buffer)
        append(UInt32(payload.count), to: &buffer)
        append(checksum, to: &buffer)
        append(sequence, to: &buffer)
        buffer.append(contentsOf: payload)
    }

    /// A frame header read from `bytes` at `offset` (which must hold ``headerSize`` bytes).
    struct Header {
        var magic: UInt32
        var length: Int
        var checksum: UInt32
        var sequence: UInt64

        init(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
            magic = bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian
            length = Int(bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self).littleEndian)
            checksum = bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self).littleEndian
            sequence = bytes.loadUnaligned(fromByteOffset: offset + 12, as: UInt64.self).littleEndian
        }

        /// Whether the payload that follows in `bytes` (at `payloadOffset`) is the one written.
        func matches(_ bytes: UnsafeRawBufferPointer, payloadOffset: Int) -> Bool {
            var sequenceBytes = sequence.littleEndian
            let computed = withUnsafeBytes(of: &sequenceBytes) { sequencePart in
                CRC32C.checksum(
                    UnsafeRawBufferPointer(rebasing: bytes[payloadOffset..<(payloadOffset + length)]),
                    continuing: CRC32C.checksum(sequencePart))
            }
            return computed == checksum
        }
    }

    private static func append<T: FixedWidthInteger>(_ value: T, to buffer: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { buffer.append(contentsOf: $0) }
    }
}
