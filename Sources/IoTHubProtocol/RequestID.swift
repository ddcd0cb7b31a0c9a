public import FoundationEssentials

/// Request ids (`$rid`) for twin operations the client starts.
public enum RequestID {
    /// A fresh, unique request id (a UUID in lower case, as Microsoft's SDKs use).
    public static func make() -> String {
        UUID().lowercasedString
    }
}

extension UUID {
    /// The UUID's text in lower case (`uuidString` is upper case), written from its bytes: the
    /// same as `uuidString.lowercased()` without a second string and Unicode case mapping (the
    /// outbox makes one for every message that comes without an id).
    public var lowercasedString: String {
        withUnsafeBytes(of: uuid) { bytes in
            String(unsafeUninitializedCapacity: 36) { text in
                let digits: StaticString = "0123456789abcdef"
                var count = 0
                for (index, byte) in bytes.enumerated() {
                    if index == 4 || index == 6 || index == 8 || index == 10 {
                        text[count] = UInt8(ascii: "-")
                        count += 1
                    }
                    text[count] = digits.utf8Start[Int(byte >> 4)]
                    text[count + 1] = digits.utf8Start[Int(byte & 0x0F)]
                    count += 2
                }
                return count
            }
        }
    }
}
