/// The property bag IoT Hub carries in the last segment of an MQTT topic:
/// `%24.mid=42&%24.ct=application%2Fjson&color=blue`.
///
/// Keys and values are percent-encoded (``PercentEncoding``), pairs are joined with `&`, and the
/// order of the entries is kept. A key without `=` has no value (nil), which is different from an
/// empty value (`key=`), as in Microsoft's SDKs.
public struct PropertyBag: Sendable, Hashable {
    /// One `key=value` entry.
    public struct Entry: Sendable, Hashable {
        public var key: String
        public var value: String?

        public init(key: String, value: String?) {
            self.key = key
            self.value = value
        }
    }

    /// The entries, in topic order.
    public var entries: [Entry]

    public init(_ entries: [Entry] = []) {
        self.entries = entries
    }

    /// Parses the encoded bag. Never fails: malformed escapes are kept literally, like the
    /// reference SDK's `unquote`.
    public init(decoding encoded: Substring) {
        guard !encoded.isEmpty else {
            self.entries = []
            return
        }
        self.entries = encoded.split(separator: "&", omittingEmptySubsequences: true).map { pair in
            if let equals = pair.firstIndex(of: "=") {
                return Entry(
                    key: PercentEncoding.decode(pair[..<equals]),
                    value: PercentEncoding.decode(pair[pair.index(after: equals)...]))
            }
            return Entry(key: PercentEncoding.decode(pair), value: nil)
        }
    }

    /// Parses the encoded bag; see ``init(decoding:)-(Substring)``.
    public init(decoding encoded: String) {
        self.init(decoding: encoded[...])
    }

    /// The encoded form for a topic.
    public var encoded: String {
        var output = ""
        encode(appendingTo: &output)
        return output
    }

    /// Appends the encoded form to `output`.
    public func encode(appendingTo output: inout String) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(encodedLengthBound)
        encode(appendingTo: &bytes)
        output += String(decoding: bytes, as: UTF8.self)
    }

    /// Appends the encoded form to `output` as UTF-8 bytes.
    func encode(appendingTo output: inout [UInt8]) {
        for (index, entry) in entries.enumerated() {
            if index > 0 { output.append(UInt8(ascii: "&")) }
            PercentEncoding.encode(entry.key, appendingTo: &output)
            if let value = entry.value {
                output.append(UInt8(ascii: "="))
                PercentEncoding.encode(value, appendingTo: &output)
            }
        }
    }

    /// At most how many bytes the encoded form takes: every byte encoded as three.
    var encodedLengthBound: Int {
        entries.reduce(0) { total, entry in total + 3 * (entry.key.utf8.count + (entry.value?.utf8.count ?? 0)) + 2 }
    }

    /// The value of the first entry named `key`.
    public subscript(key: String) -> String? {
        entries.first { $0.key == key }?.value
    }

    /// Appends an entry.
    public mutating func append(_ key: String, _ value: String?) {
        entries.append(Entry(key: key, value: value))
    }

    public var isEmpty: Bool { entries.isEmpty }
}

/// The system-property keys IoT Hub uses in property bags.
public enum SystemPropertyKey {
    public static let messageId = "$.mid"
    public static let correlationId = "$.cid"
    public static let userId = "$.uid"
    public static let contentType = "$.ct"
    public static let contentEncoding = "$.ce"
    public static let expiryTimeUTC = "$.exp"
    public static let outputName = "$.on"
    public static let interfaceId = "$.ifid"
    /// The device or module a cloud-to-device message is addressed to (hub to device only).
    public static let to = "$.to"
    /// The feedback the sender of a cloud-to-device message asked for (hub to device only).
    public static let ack = "iothub-ack"
}
