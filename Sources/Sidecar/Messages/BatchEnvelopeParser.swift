import FoundationEssentials

/// Reads IoT Hub's batch envelope (`application/vnd.microsoft.iothub.json`): a JSON array of
/// `{"body": string, "base64Encoded": bool, "properties": {string: string}}`.
///
/// A single pass over the bytes, without building a JSON tree or going through `Codable`: the
/// envelope is on the hot path of batched telemetry. Strict RFC 8259 JSON: the document must be
/// valid UTF-8, strings must not contain raw control characters, and unknown members may hold
/// any JSON value (skipped, but checked). `base64Encoded` and `properties` may be left out, not
/// given as `null`; no member may be given twice.
struct BatchEnvelopeParser {
    /// One entry as written in the envelope, not yet checked as a message.
    struct Entry: Sendable {
        /// The body's bytes: the UTF-8 of the JSON string (still base64 text when `base64Encoded`).
        var body: Data
        var base64Encoded: Bool
        /// The properties in document order.
        var properties: [(name: String, value: String)]
    }

    /// Why an envelope was refused, phrased for a problem's `detail`.
    struct Failure: Error, Equatable {
        var reason: String
        /// The document is not JSON at all at this point, as opposed to JSON of the wrong shape.
        var isSyntaxError = false
    }

    private static let bodyName = Array("body".utf8)
    private static let base64EncodedName = Array("base64Encoded".utf8)
    private static let propertiesName = Array("properties".utf8)

    /// Nesting deeper than this inside an unknown member is refused (no unbounded recursion).
    static let maximumDepth = 64

    private let bytes: UnsafeRawBufferPointer
    private var position = 0

    private init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    /// The entries of `data`, in order.
    static func entries(in data: Data) throws(Failure) -> [Entry] {
        let outcome = data.withUnsafeBytes { buffer -> Result<[Entry], Failure> in
            var parser = BatchEnvelopeParser(buffer)
            do throws(Failure) {
                return .success(try parser.document())
            } catch {
                return .failure(error)
            }
        }
        return try outcome.get()
    }

    // MARK: The envelope

    private mutating func document() throws(Failure) -> [Entry] {
        guard consumeAfterWhitespace(UInt8(ascii: "[")) else { throw fail("the document is not a JSON array") }
        var entries: [Entry] = []
        if !consumeAfterWhitespace(UInt8(ascii: "]")) {
            while true {
                entries.append(try entry(index: entries.count))
                skipWhitespace()
                let separator = try next("',' or ']' after entry \(entries.count - 1)")
                if separator == UInt8(ascii: "]") { break }
                guard separator == UInt8(ascii: ",") else {
                    throw fail("expected ',' or ']' after entry \(entries.count - 1)", back: 1)
                }
            }
        }
        skipWhitespace()
        guard position == bytes.count else { throw fail("unexpected data after the array") }
        return entries
    }

    private mutating func entry(index: Int) throws(Failure) -> Entry {
        guard consumeAfterWhitespace(UInt8(ascii: "{")) else { throw fail("entry \(index) is not an object") }
        var body: Data?
        var base64Encoded: Bool?
        var properties: [(name: String, value: String)]?
        try members { (parser: inout BatchEnvelopeParser, name: [UInt8]) throws(Failure) in
            if name == Self.bodyName {
                guard body == nil else { throw parser.fail("entry \(index): body is given twice") }
                guard parser.peek() == UInt8(ascii: "\"") else {
                    throw parser.wrongType("entry \(index): body must be a string")
                }
                body = Data(try parser.stringBytes())
            } else if name == Self.base64EncodedName {
                guard base64Encoded == nil else { throw parser.fail("entry \(index): base64Encoded is given twice") }
                if parser.consume("true") {
                    base64Encoded = true
                } else if parser.consume("false") {
                    base64Encoded = false
                } else {
                    throw parser.wrongType("entry \(index): base64Encoded must be true or false")
                }
            } else if name == Self.propertiesName {
                guard properties == nil else { throw parser.fail("entry \(index): properties is given twice") }
                properties = try parser.properties(index: index)
            } else {
                try parser.skipValue(depth: 1)
            }
        }
        guard let body else { throw fail("entry \(index): the member body is missing") }
        return Entry(body: body, base64Encoded: base64Encoded ?? false, properties: properties ?? [])
    }

    private mutating func properties(index: Int) throws(Failure) -> [(name: String, value: String)] {
        guard peek() == UInt8(ascii: "{") else {
            throw wrongType("entry \(index): properties must be an object of strings")
        }
        position += 1
        var pairs: [(name: String, value: String)] = []
        try members { (parser: inout BatchEnvelopeParser, name: [UInt8]) throws(Failure) in
            let key = String(decoding: name, as: UTF8.self)
            guard parser.peek() == UInt8(ascii: "\"") else {
                throw parser.wrongType("entry \(index): the property \(key) must be a string")
            }
            let value = String(decoding: try parser.stringBytes(), as: UTF8.self)
            guard !pairs.contains(where: { $0.name == key }) else {
                throw parser.fail("entry \(index): the property \(key) is given twice")
            }
            pairs.append((key, value))
        }
        return pairs
    }

    /// Reads the members of an object whose `{` is consumed, up to and including its `}`; calls
    /// `member` with each name, positioned at the value, which `member` must consume.
    private mutating func members(_ member: (inout BatchEnvelopeParser, [UInt8]) throws(Failure) -> Void)
        throws(Failure)
    {
        if consumeAfterWhitespace(UInt8(ascii: "}")) { return }
        while true {
            skipWhitespace()
            guard peek() == UInt8(ascii: "\"") else { throw fail("expected a member name") }
            let name = try stringBytes()
            skipWhitespace()
            guard try next("':'") == UInt8(ascii: ":") else { throw fail("expected ':' after a member name", back: 1) }
            skipWhitespace()
            try member(&self, name)
            skipWhitespace()
            let separator = try next("',' or '}'")
            if separator == UInt8(ascii: "}") { return }
            guard separator == UInt8(ascii: ",") else { throw fail("expected ',' or '}' in an object", back: 1) }
        }
    }

    // MARK: JSON values

    /// The UTF-8 bytes a JSON string stands for; the parser is at its opening quote.
    private mutating func stringBytes() throws(Failure) -> [UInt8] {
        let start = position
        position += 1
        var output: [UInt8] = []
        var runStart = position
        var ascii = true
        while true {
            guard position < bytes.count else { throw fail("unterminated string", at: start) }
            let byte = bytes[position]
            switch byte {
            case UInt8(ascii: "\""):
                output.append(contentsOf: bytes[runStart..<position])
                position += 1
                if !ascii, String(validating: output, as: UTF8.self) == nil {
                    throw fail("a string is not valid UTF-8", at: start)
                }
                return output
            case UInt8(ascii: "\\"):
                output.append(contentsOf: bytes[runStart..<position])
                position += 1
                try escape(into: &output)
                runStart = position
            case 0..<0x20:
                throw fail("a control character inside a string")
            default:
                if byte >= 0x80 { ascii = false }
                position += 1
            }
        }
    }

    /// Decodes the escape after a backslash into `output`.
    private mutating func escape(into output: inout [UInt8]) throws(Failure) {
        let letter = try next("an escape")
        switch letter {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): output.append(letter)
        case UInt8(ascii: "b"): output.append(0x08)
        case UInt8(ascii: "f"): output.append(0x0C)
        case UInt8(ascii: "n"): output.append(0x0A)
        case UInt8(ascii: "r"): output.append(0x0D)
        case UInt8(ascii: "t"): output.append(0x09)
        case UInt8(ascii: "u"):
            var scalar = UInt32(try hex4())
            if (0xD800..<0xDC00).contains(scalar) {
                // A high surrogate must be followed by an escaped low surrogate.
                guard consume("\\u") else { throw fail("a lone surrogate in a \\u escape") }
                let low = UInt32(try hex4())
                guard (0xDC00..<0xE000).contains(low) else { throw fail("a lone surrogate in a \\u escape") }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if (0xDC00..<0xE000).contains(scalar) {
                throw fail("a lone surrogate in a \\u escape")
            }
            guard let unicode = Unicode.Scalar(scalar) else { throw fail("an invalid \\u escape") }
            output.append(contentsOf: unicode.utf8)
        default:
            throw fail("an invalid escape \\\(Character(Unicode.Scalar(letter)))", back: 1)
        }
    }

    private mutating func hex4() throws(Failure) -> UInt16 {
        var value: UInt16 = 0
        for _ in 0..<4 {
            let byte = try next("four hexadecimal digits")
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw fail("a \\u escape needs four hexadecimal digits", back: 1)
            }
            value = value << 4 | UInt16(digit)
        }
        return value
    }

    /// Skips any JSON value, checking it.
    private mutating func skipValue(depth: Int) throws(Failure) {
        guard depth <= Self.maximumDepth else { throw fail("nested deeper than \(Self.maximumDepth) levels") }
        switch peek() ?? 0 {
        case UInt8(ascii: "\""):
            _ = try stringBytes()
        case UInt8(ascii: "{"):
            position += 1
            try members { (parser: inout BatchEnvelopeParser, _: [UInt8]) throws(Failure) in
                try parser.skipValue(depth: depth + 1)
            }
        case UInt8(ascii: "["):
            position += 1
            if consumeAfterWhitespace(UInt8(ascii: "]")) { return }
            while true {
                skipWhitespace()
                try skipValue(depth: depth + 1)
                skipWhitespace()
                let separator = try next("',' or ']'")
                if separator == UInt8(ascii: "]") { return }
                guard separator == UInt8(ascii: ",") else { throw fail("expected ',' or ']' in an array", back: 1) }
            }
        case UInt8(ascii: "t"):
            guard consume("true") else { throw fail("not a JSON value") }
        case UInt8(ascii: "f"):
            guard consume("false") else { throw fail("not a JSON value") }
        case UInt8(ascii: "n"):
            guard consume("null") else { throw fail("not a JSON value") }
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            try skipNumber()
        default:
            throw fail("not a JSON value")
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    private mutating func skipNumber() throws(Failure) {
        if peek() == UInt8(ascii: "-") { position += 1 }
        if peek() == UInt8(ascii: "0") {
            position += 1
        } else {
            guard try digits() > 0 else { throw fail("not a JSON number") }
        }
        if peek() == UInt8(ascii: ".") {
            position += 1
            guard try digits() > 0 else { throw fail("not a JSON number") }
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            position += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { position += 1 }
            guard try digits() > 0 else { throw fail("not a JSON number") }
        }
    }

    private mutating func digits() throws(Failure) -> Int {
        let start = position
        while let byte = peek(), (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { position += 1 }
        return position - start
    }

    // MARK: Bytes

    private func peek() -> UInt8? {
        position < bytes.count ? bytes[position] : nil
    }

    /// The next byte; `expected` names what should come, for the error at the end of the data.
    private mutating func next(_ expected: String) throws(Failure) -> UInt8 {
        guard position < bytes.count else { throw fail("the data ends where \(expected) should come") }
        defer { position += 1 }
        return bytes[position]
    }

    /// Consumes `literal` if the data continues with it.
    private mutating func consume(_ literal: StaticString) -> Bool {
        let count = literal.utf8CodeUnitCount
        guard bytes.count - position >= count else { return false }
        let matches = literal.withUTF8Buffer { expected in
            (0..<count).allSatisfy { bytes[position + $0] == expected[$0] }
        }
        if matches { position += count }
        return matches
    }

    /// Skips blanks, then consumes `byte` if it comes next.
    private mutating func consumeAfterWhitespace(_ byte: UInt8) -> Bool {
        skipWhitespace()
        guard peek() == byte else { return false }
        position += 1
        return true
    }

    private mutating func skipWhitespace() {
        while let byte = peek(), byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 { position += 1 }
    }

    /// The failure for a value of the wrong type here: a syntax error when what follows is not
    /// a JSON value at all (`'x'`, a bare word), else `reason`.
    private func wrongType(_ reason: String) -> Failure {
        var probe = self
        do throws(Failure) {
            try probe.skipValue(depth: 1)
        } catch {
            return Failure(reason: error.reason, isSyntaxError: true)
        }
        return fail(reason)
    }

    private func fail(_ reason: String, back: Int = 0) -> Failure {
        fail(reason, at: position - back)
    }

    private func fail(_ reason: String, at offset: Int) -> Failure {
        Failure(reason: "\(reason) (at byte \(max(0, offset)))")
    }
}
