import Foundation
import IoTHubProtocol
import PropertyBased
import Testing

/// Strings that are hard on an encoder: separators, escapes, spaces, non-ASCII, controls.
let hostileStrings: [String] = [
    "", " ", "plain", "a b", "a+b", "a&b", "a=b", "a/b", "a%b", "%", "%2", "%zz", "%41",
    "$.mid", "#", "?", "\u{0}", "\n\t", "ünïcödé", "日本語", "🚀🔥", "e\u{301}", "~-._",
    String(repeating: "&=/% ", count: 2_000),
]

/// A generator of arbitrary strings mixing ASCII punctuation with multi-byte code points.
let hostileStringGenerator = Gen<Character>.oneOf(
    Gen.character(in: " "..."~"),
    Gen.character(in: "\u{80}"..."\u{7FF}"),
    Gen.character(in: "\u{4E00}"..."\u{4FFF}"),
    Gen.character(in: "\u{1F300}"..."\u{1F5FF}")
).string(of: 0...40)

@Suite struct PercentEncodingTests {
    @Test func encodesLikePythonQuoteWithNothingSafe() {
        // Expected values from Python: urllib.parse.quote(value, safe="").
        #expect(PercentEncoding.encode("$.mid") == "%24.mid")
        #expect(PercentEncoding.encode("a b/c&d=e") == "a%20b%2Fc%26d%3De")
        #expect(PercentEncoding.encode("~-._AZaz09") == "~-._AZaz09")
        #expect(PercentEncoding.encode("ü") == "%C3%BC")
        #expect(PercentEncoding.encode("🚀") == "%F0%9F%9A%80")
        #expect(PercentEncoding.encode("+%") == "%2B%25")
        #expect(PercentEncoding.encode("application/json") == "application%2Fjson")
    }

    @Test func decodesLikePythonUnquote() {
        #expect(PercentEncoding.decode("%24.mid") == "$.mid")
        #expect(PercentEncoding.decode("a+b") == "a+b")
        #expect(PercentEncoding.decode("%c3%bc") == "ü")
        #expect(PercentEncoding.decode("100%") == "100%")
        #expect(PercentEncoding.decode("%zz%4") == "%zz%4")
        #expect(PercentEncoding.decode("%FF") == "\u{FFFD}")
    }

    @Test(arguments: hostileStrings)
    func roundTrips(_ value: String) {
        let encoded = PercentEncoding.encode(value)
        #expect(
            encoded.utf8.allSatisfy {
                $0 < 0x80 && ![UInt8(ascii: "&"), UInt8(ascii: "="), UInt8(ascii: "/"), UInt8(ascii: " ")].contains($0)
            })
        #expect(PercentEncoding.decode(encoded) == value)
    }

    @Test func roundTripsArbitraryStrings() async {
        await propertyCheck(count: 300, input: hostileStringGenerator) { value in
            #expect(PercentEncoding.decode(PercentEncoding.encode(value)) == value)
        }
    }

    /// Strict decoding (names in request paths) answers as Foundation's `removingPercentEncoding`,
    /// which the sidecar used before it stopped linking Foundation.
    @Test(arguments: hostileStrings + ["%FF", "%c3%bc", "%C3", "a%2", "%%41", "%41%", "%ZZ", "%e2%82%ac"])
    func strictDecodingIsFoundationsRemovingPercentEncoding(_ value: String) {
        #expect(PercentEncoding.strictlyDecode(value[...]) == value.removingPercentEncoding)
        let encoded = PercentEncoding.encode(value)
        #expect(PercentEncoding.strictlyDecode(encoded[...]) == encoded.removingPercentEncoding)
    }
}
