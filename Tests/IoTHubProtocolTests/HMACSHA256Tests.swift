import Foundation
import Testing

@testable import IoTHubProtocol

@Suite struct HMACSHA256Tests {
    /// RFC 4231 test cases 1, 2 and 6 (HMAC-SHA-256).
    static let rfc4231: [(key: [UInt8], message: String, mac: String)] = [
        (
            Array(repeating: 0x0b, count: 20), "Hi There",
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        ),
        (
            Array("Jefe".utf8), "what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        ),
        (
            Array(repeating: 0xaa, count: 131), "Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        ),
    ]

    @Test(arguments: rfc4231)
    func matchesRFC4231(_ vector: (key: [UInt8], message: String, mac: String)) {
        let mac = HMACSHA256.authenticationCode(key: vector.key, message: vector.message.utf8)
        #expect(mac?.map { String(format: "%02x", $0) }.joined() == vector.mac)
    }

    @Test func constantTimeEquality() {
        #expect(HMACSHA256.constantTimeEquals([1, 2, 3], [1, 2, 3]))
        #expect(!HMACSHA256.constantTimeEquals([1, 2, 3], [1, 2, 4]))
        #expect(!HMACSHA256.constantTimeEquals([1, 2, 3], [1, 2]))
        #expect(HMACSHA256.constantTimeEquals([], []))
    }
}
