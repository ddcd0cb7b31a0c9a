internal import COpenSSL

/// HMAC-SHA256 through OpenSSL's one-shot `HMAC`.
enum HMACSHA256 {
    static let digestLength = 32

    /// The 32-byte MAC of `message` under `key`, or nil if OpenSSL failed (it does not for
    /// SHA-256 with any key length; the nil exists so no caller has to trap).
    static func authenticationCode(key: [UInt8], message: some Collection<UInt8>) -> [UInt8]? {
        var digest = [UInt8](repeating: 0, count: digestLength)
        var digestLength: UInt32 = 0
        let message = Array(message)
        let result = key.withUnsafeBytes { keyBytes in
            message.withUnsafeBufferPointer { messageBytes in
                digest.withUnsafeMutableBufferPointer { digestBytes in
                    HMAC(
                        EVP_sha256(), keyBytes.baseAddress, Int32(keyBytes.count),
                        messageBytes.baseAddress, messageBytes.count,
                        digestBytes.baseAddress, &digestLength)
                }
            }
        }
        guard result != nil, digestLength == Self.digestLength else { return nil }
        return digest
    }

    /// Compares two byte strings in time that depends only on their lengths.
    static func constantTimeEquals(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        guard lhs.count == rhs.count else { return false }
        var difference: UInt8 = 0
        for index in lhs.indices {
            difference |= lhs[index] ^ rhs[index]
        }
        return difference == 0
    }
}
