/// CRC-32C (Castagnoli), the checksum of every frame: it tells a frame written whole from a torn
/// or overwritten one.
enum CRC32C {
    private static let table: [UInt32] = (0..<256).map { index -> UInt32 in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 == 1 ? (value >> 1) ^ 0x82F6_3B78 : value >> 1 }
        return value
    }

    /// The checksum of `bytes`, continuing from `start` (the checksum of what came before).
    static func checksum(_ bytes: UnsafeRawBufferPointer, continuing start: UInt32 = 0) -> UInt32 {
        var crc = ~start
        table.withUnsafeBufferPointer { table in
            for byte in bytes {
                crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8)
            }
        }
        return ~crc
    }

    static func checksum(_ bytes: [UInt8], continuing start: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0, continuing: start) }
    }
}
