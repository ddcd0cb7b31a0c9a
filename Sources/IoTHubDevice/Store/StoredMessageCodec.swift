import Foundation
import IoTHubProtocol

/// A message as the outbox and the inbox keep it on disk: the payload, every system and
/// application property, exactly, in a compact binary form (version 1):
///
///     version 1 byte, payload (u32 length + bytes), 11 optional strings (a presence byte, then
///     u32 length + UTF-8), application properties (u32 count, then key and value strings)
enum StoredMessageCodec {
    static let version: UInt8 = 1

    static func encode(_ message: Message, into bytes: inout [UInt8]) {
        bytes.append(version)
        appendBytes(message.payload, to: &bytes)
        for field in [
            message.messageId, message.correlationId, message.userId, message.contentType, message.contentEncoding,
            message.expiryTimeUTC,
            message.outputName, message.interfaceId, message.to, message.ack, message.inputName,
        ] {
            if let field {
                bytes.append(1)
                appendBytes(Data(field.utf8), to: &bytes)
            } else {
                bytes.append(0)
            }
        }
        appendInteger(UInt32(message.properties.count), to: &bytes)
        for (key, value) in message.properties.sorted(by: { $0.key < $1.key }) {
            appendBytes(Data(key.utf8), to: &bytes)
            appendBytes(Data(value.utf8), to: &bytes)
        }
    }

    /// Reads one message at `reader`'s position; nil when the bytes are not a message this
    /// version wrote.
    static func decode(_ reader: inout ByteReader) -> Message? {
        guard reader.readByte() == version, let payload = reader.readBytes() else { return nil }
        var fields: [String?] = []
        for _ in 0..<11 {
            guard let present = reader.readByte() else { return nil }
            if present == 0 {
                fields.append(nil)
            } else {
                guard let text = reader.readString() else { return nil }
                fields.append(text)
            }
        }
        guard let count = reader.readInteger(UInt32.self), count <= 100_000 else { return nil }
        var properties: [String: String] = [:]
        for _ in 0..<count {
            guard let key = reader.readString(), let value = reader.readString() else { return nil }
            properties[key] = value
        }
        return Message(
            payload: Data(payload), messageId: fields[0], correlationId: fields[1], userId: fields[2],
            contentType: fields[3],
            contentEncoding: fields[4], expiryTimeUTC: fields[5], outputName: fields[6], interfaceId: fields[7],
            properties: properties,
            to: fields[8], ack: fields[9], inputName: fields[10])
    }

    static func appendBytes(_ data: some Collection<UInt8>, to bytes: inout [UInt8]) {
        appendInteger(UInt32(data.count), to: &bytes)
        bytes.append(contentsOf: data)
    }

    static func appendInteger<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }
}

/// Reads the little-endian fields of a stored record.
struct ByteReader {
    private let bytes: [UInt8]
    private(set) var position = 0

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    var isAtEnd: Bool { position >= bytes.count }

    mutating func readByte() -> UInt8? {
        guard position < bytes.count else { return nil }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func readInteger<T: FixedWidthInteger>(_: T.Type) -> T? {
        let size = MemoryLayout<T>.size
        guard position + size <= bytes.count else { return nil }
        defer { position += size }
        return bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: position, as: T.self)) }
    }

    mutating func readBytes() -> ArraySlice<UInt8>? {
        guard let length = readInteger(UInt32.self).map(Int.init), position + length <= bytes.count else { return nil }
        defer { position += length }
        return bytes[position..<(position + length)]
    }

    mutating func readString() -> String? {
        guard let slice = readBytes() else { return nil }
        return String(validating: slice, as: UTF8.self)
    }
}
