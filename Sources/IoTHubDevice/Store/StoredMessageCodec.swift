import FoundationEssentials
import IoTHubProtocol

/// A message as the outbox and the inbox keep it on disk: the payload, every system and
/// application property, exactly, in a compact binary form (version 1):
///
///     version 1 byte, payload (u32 length + bytes), 11 optional strings (a presence byte, then
///     u32 length + UTF-8), application properties (u32 count, then key and value strings)
enum StoredMessageCodec {
    static let version: UInt8 = 1

    static func encode(_ message: Message, into bytes: inout [UInt8]) {
        // Field by field, without an array of the fields or a copy of each: this runs for every
        // message the outbox accepts.
        bytes.append(version)
        appendBytes(message.payload, to: &bytes)
        appendOptional(message.messageId, to: &bytes)
        appendOptional(message.correlationId, to: &bytes)
        appendOptional(message.userId, to: &bytes)
        appendOptional(message.contentType, to: &bytes)
        appendOptional(message.contentEncoding, to: &bytes)
        appendOptional(message.expiryTimeUTC, to: &bytes)
        appendOptional(message.outputName, to: &bytes)
        appendOptional(message.interfaceId, to: &bytes)
        appendOptional(message.to, to: &bytes)
        appendOptional(message.ack, to: &bytes)
        appendOptional(message.inputName, to: &bytes)
        appendInteger(UInt32(message.properties.count), to: &bytes)
        guard !message.properties.isEmpty else { return }
        for (key, value) in message.properties.sorted(by: { $0.key < $1.key }) {
            appendBytes(key.utf8, to: &bytes)
            appendBytes(value.utf8, to: &bytes)
        }
    }

    /// The most bytes ``encode(_:into:)`` writes for `message`: for reserving them at once.
    static func encodedSizeBound(_ message: Message) -> Int {
        // version, payload length, 11 presence bytes and lengths, property count, 2 lengths a property
        1 + 4 + 11 * 5 + 4 + 8 * message.properties.count + message.size
            + (message.to?.utf8.count ?? 0) + (message.ack?.utf8.count ?? 0) + (message.inputName?.utf8.count ?? 0)
    }

    private static func appendOptional(_ field: String?, to bytes: inout [UInt8]) {
        guard let field else {
            bytes.append(0)
            return
        }
        bytes.append(1)
        appendBytes(field.utf8, to: &bytes)
    }

    /// Reads one message at `reader`'s position; nil when the bytes are not a message this
    /// version wrote.
    static func decode(_ reader: inout ByteReader) -> Message? {
        guard reader.readByte() == version, let payload = reader.readBytes(),
            let messageId = reader.readOptionalString(), let correlationId = reader.readOptionalString(),
            let userId = reader.readOptionalString(), let contentType = reader.readOptionalString(),
            let contentEncoding = reader.readOptionalString(), let expiryTimeUTC = reader.readOptionalString(),
            let outputName = reader.readOptionalString(), let interfaceId = reader.readOptionalString(),
            let to = reader.readOptionalString(), let ack = reader.readOptionalString(),
            let inputName = reader.readOptionalString(),
            let count = reader.readInteger(UInt32.self), count <= 100_000
        else { return nil }
        var properties: [String: String] = [:]
        if count > 0 { properties.reserveCapacity(Int(count)) }
        for _ in 0..<count {
            guard let key = reader.readString(), let value = reader.readString() else { return nil }
            properties[key] = value
        }
        return Message(
            payload: Data(payload), messageId: messageId, correlationId: correlationId, userId: userId,
            contentType: contentType, contentEncoding: contentEncoding, expiryTimeUTC: expiryTimeUTC,
            outputName: outputName, interfaceId: interfaceId, properties: properties, to: to, ack: ack,
            inputName: inputName)
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

    /// A presence byte, then the string if present: `.some(nil)` when absent, nil when the
    /// bytes are not such a field.
    mutating func readOptionalString() -> String?? {
        switch readByte() {
        case 0: return .some(nil)
        case 1: return readString().map { .some($0) }
        default: return nil
        }
    }
}
