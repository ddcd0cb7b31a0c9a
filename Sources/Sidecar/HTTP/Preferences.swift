import HTTPTypes

/// The preferences of a request's `Prefer` header fields (RFC 7240): `respond-async`,
/// `wait=10`, `handling=lenient`, …, in any number of fields, comma-separated within one.
///
/// A preference is a token, optionally `= value` (a token or a quoted string), followed by
/// parameters after `;` that this parser skips. Tokens compare case-insensitively; values keep
/// their case. A preference given twice counts once, the first time (RFC 7240 §2).
struct Preferences: Sendable, Equatable {
    /// Lower-case preference names and their values (nil: given without `=`).
    private(set) var values: [String: String?] = [:]

    static let respondAsync = "respond-async"

    init(_ headers: HTTPFields) {
        // Through the fields, not `headers[values:]`, which first indexes them all.
        for field in headers where field.name == .prefer {
            var value = field.value
            value.withUTF8 { bytes in parse(bytes[...]) }
        }
    }

    /// Whether `name` was given (with or without a value).
    func contains(_ name: String) -> Bool {
        values[name.lowercased()] != nil
    }

    /// `Prefer: respond-async`.
    var respondAsync: Bool { contains(Self.respondAsync) }

    /// Part of a field's UTF-8 bytes. The parser works on bytes, not characters: every
    /// delimiter is ASCII, and this runs for every `POST /messages` that asks for
    /// `respond-async` (character-wise scanning cost more than the rest of accepting).
    private typealias Bytes = Slice<UnsafeBufferPointer<UInt8>>

    private mutating func parse(_ field: Bytes) {
        var rest: Bytes? = field
        while let remaining = rest {
            let (preference, next) = Self.cut(remaining, at: UInt8(ascii: ","))
            rest = next
            // Parameters after `;` are skipped.
            let (rawName, rawValue) = Self.cut(Self.cut(preference, at: UInt8(ascii: ";")).head, at: UInt8(ascii: "="))
            let name = Self.trimmed(rawName)
            guard !name.isEmpty, !name.contains(where: { $0 == Self.quote || Self.isBlank($0) }) else { continue }
            let key = String(decoding: name.lazy.map(Self.asciiLowercased), as: UTF8.self)
            if values[key] == nil { values[key] = .some(rawValue.map { Self.unquoted(Self.trimmed($0)) }) }
        }
    }

    /// The bytes before the first `separator` outside a quoted string (where `\` escapes the
    /// next byte), and those after it; nil after when there is no separator.
    private static func cut(_ text: Bytes, at separator: UInt8) -> (head: Bytes, rest: Bytes?) {
        var index = text.startIndex
        var quoted = false
        while index < text.endIndex {
            let byte = text[index]
            if quoted, byte == backslash {
                index += 2
                continue
            }
            if byte == quote {
                quoted.toggle()
            } else if byte == separator, !quoted {
                return (text[text.startIndex..<index], text[(index + 1)...])
            }
            index += 1
        }
        return (text, nil)
    }

    private static func trimmed(_ text: Bytes) -> Bytes {
        guard let first = text.firstIndex(where: { !isBlank($0) }), let last = text.lastIndex(where: { !isBlank($0) })
        else { return text[text.startIndex..<text.startIndex] }
        return text[first...last]
    }

    /// A quoted string's content (escapes resolved), or the token as it is.
    private static func unquoted(_ text: Bytes) -> String {
        guard text.count >= 2, text.first == quote, text.last == quote else {
            return String(decoding: text, as: UTF8.self)
        }
        var result: [UInt8] = []
        result.reserveCapacity(text.count)
        var escaped = false
        for byte in text.dropFirst().dropLast() {
            if escaped {
                result.append(byte)
                escaped = false
            } else if byte == backslash {
                escaped = true
            } else {
                result.append(byte)
            }
        }
        return String(decoding: result, as: UTF8.self)
    }

    private static let quote = UInt8(ascii: "\"")
    private static let backslash = UInt8(ascii: "\\")

    private static func isBlank(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t")
    }

    private static func asciiLowercased(_ byte: UInt8) -> UInt8 {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte + 32 : byte
    }
}

extension HTTPField.Name {
    /// `Prefer` (RFC 7240).
    static let prefer = HTTPField.Name("Prefer") ?? .contentType
    /// `Preference-Applied` (RFC 7240).
    static let preferenceApplied = HTTPField.Name("Preference-Applied") ?? .contentType
}
