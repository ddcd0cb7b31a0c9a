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
        for field in headers[values: .prefer] {
            for preference in Self.split(field, separator: ",") {
                let parts = Self.split(preference, separator: ";")
                guard let first = parts.first else { continue }
                let nameAndValue = Self.split(first, separator: "=", maximumSplits: 1)
                let name = Self.trimmed(nameAndValue[0]).lowercased()
                guard !name.isEmpty, !name.contains(where: { $0 == "\"" || $0 == " " || $0 == "\t" }) else { continue }
                let value = nameAndValue.count > 1 ? Self.unquoted(Self.trimmed(nameAndValue[1])) : nil
                if values[name] == nil { values[name] = .some(value) }
            }
        }
    }

    /// Whether `name` was given (with or without a value).
    func contains(_ name: String) -> Bool {
        values[name.lowercased()] != nil
    }

    /// `Prefer: respond-async`.
    var respondAsync: Bool { contains(Self.respondAsync) }

    /// Splits at `separator` outside quoted strings (where `\` escapes the next character).
    private static func split(_ text: some StringProtocol, separator: Character, maximumSplits: Int = .max)
        -> [Substring]
    {
        let text = Substring(text)
        var parts: [Substring] = []
        var start = text.startIndex
        var index = text.startIndex
        var quoted = false
        while index < text.endIndex {
            let character = text[index]
            if quoted, character == "\\" {
                index = text.index(after: index)
                if index < text.endIndex { index = text.index(after: index) }
                continue
            }
            if character == "\"" {
                quoted.toggle()
            } else if character == separator, !quoted, parts.count < maximumSplits {
                parts.append(text[start..<index])
                start = text.index(after: index)
            }
            index = text.index(after: index)
        }
        parts.append(text[start...])
        return parts
    }

    private static func trimmed(_ text: Substring) -> Substring {
        let isBlank = { (character: Character) in character == " " || character == "\t" }
        guard let first = text.firstIndex(where: { !isBlank($0) }), let last = text.lastIndex(where: { !isBlank($0) })
        else { return "" }
        return text[first...last]
    }

    /// A quoted string's content (escapes resolved), or the token as it is.
    private static func unquoted(_ text: Substring) -> String {
        guard text.count >= 2, text.first == "\"", text.last == "\"" else { return String(text) }
        var result = ""
        var escaped = false
        for character in text.dropFirst().dropLast() {
            if escaped {
                result.append(character)
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else {
                result.append(character)
            }
        }
        return result
    }
}

extension HTTPField.Name {
    /// `Prefer` (RFC 7240).
    static let prefer = HTTPField.Name("Prefer") ?? .contentType
    /// `Preference-Applied` (RFC 7240).
    static let preferenceApplied = HTTPField.Name("Preference-Applied") ?? .contentType
}
