/// Percent-encoding exactly as IoT Hub's SDKs apply it to topic segments, property bags,
/// MQTT user names and SAS resource URIs.
///
/// Only the RFC 3986 unreserved characters (`A–Z a–z 0–9 - . _ ~`) stay as they are; every other
/// byte of the UTF-8 encoding becomes `%XX` with upper-case hex digits. That is what Python's
/// `urllib.parse.quote(value, safe="")` produces, so `$` becomes `%24` and `/` becomes `%2F`.
public enum PercentEncoding {
    /// Encodes `value` for use inside a topic, a property bag or a SAS resource URI.
    public static func encode(_ value: String) -> String {
        var output = ""
        encode(value, appendingTo: &output)
        return output
    }

    /// Appends the encoded form of `value` to `output`.
    public static func encode(_ value: String, appendingTo output: inout String) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(value.utf8.count)
        encode(value, appendingTo: &bytes)
        output += String(decoding: bytes, as: UTF8.self)
    }

    /// Appends the encoded form of `value` to `output` as UTF-8 bytes: how a telemetry topic is
    /// built, one byte buffer for the whole topic (docs/PERFORMANCE.md, "Work per request").
    static func encode(_ value: String, appendingTo output: inout [UInt8]) {
        func append(_ bytes: UnsafeBufferPointer<UInt8>) {
            for byte in bytes {
                if isUnreserved(byte) {
                    output.append(byte)
                } else {
                    output.append(UInt8(ascii: "%"))
                    output.append(hexDigit(byte >> 4))
                    output.append(hexDigit(byte & 0x0F))
                }
            }
        }
        if value.utf8.withContiguousStorageIfAvailable(append) == nil {
            Array(value.utf8).withUnsafeBufferPointer(append)
        }
    }

    /// Decodes `%XX` sequences. Like Python's `urllib.parse.unquote`, a `%` that is not followed
    /// by two hex digits is kept as it is, `+` is not a space, and byte sequences that are not
    /// valid UTF-8 become U+FFFD, so decoding never fails.
    public static func decode(_ value: Substring) -> String {
        guard value.utf8.contains(UInt8(ascii: "%")) else { return String(value) }
        // Lenient decoding always has bytes.
        return String(decoding: decodedBytes(value, strict: false) ?? [], as: UTF8.self)
    }

    /// Decodes `%XX` sequences, or nil when `value` is not valid percent-encoded UTF-8: a `%`
    /// without two hex digits, or bytes that are not UTF-8 (as Foundation's
    /// `removingPercentEncoding`). For names a client chose, which must not be changed silently.
    public static func strictlyDecode(_ value: Substring) -> String? {
        guard value.utf8.contains(UInt8(ascii: "%")) else { return String(value) }
        return decodedBytes(value, strict: true).flatMap { String(validating: $0, as: UTF8.self) }
    }

    /// The bytes `%XX` sequences stand for; a `%` without two hex digits is kept, or with
    /// `strict` makes the answer nil.
    private static func decodedBytes(_ value: Substring, strict: Bool) -> [UInt8]? {
        let bytes = Array(value.utf8)
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "%"), index + 2 < bytes.count,
                let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2])
            {
                output.append(high << 4 | low)
                index += 3
            } else {
                if strict && byte == UInt8(ascii: "%") { return nil }
                output.append(byte)
                index += 1
            }
        }
        return output
    }

    /// Decodes `%XX` sequences; see ``decode(_:)-(Substring)``.
    public static func decode(_ value: String) -> String {
        decode(value[...])
    }

    @inline(__always)
    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "A") + value - 10
    }

    @inline(__always)
    private static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    @inline(__always)
    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
