import Testing

@testable import Sidecar

@Suite struct APITokenMiddlewareTests {
    @Test func tokensCompareWholly() {
        #expect(APITokenMiddleware.constantTimeEqual(Array("abc".utf8), Array("abc".utf8)))
        #expect(!APITokenMiddleware.constantTimeEqual(Array("abc".utf8), Array("abd".utf8)))
        #expect(!APITokenMiddleware.constantTimeEqual(Array("abc".utf8), Array("abcd".utf8)))
        #expect(!APITokenMiddleware.constantTimeEqual([], Array("a".utf8)))
    }
}
