import Foundation
import Testing

@testable import Sidecar

@Suite struct BatchEnvelopeParserTests {
    private func entries(_ json: String) throws -> [BatchEnvelopeParser.Entry] {
        try BatchEnvelopeParser.entries(in: Data(json.utf8))
    }

    private func failure(_ json: some Sequence<UInt8>) -> String? {
        do {
            _ = try BatchEnvelopeParser.entries(in: Data(json))
            return nil
        } catch {
            return error.reason
        }
    }

    @Test func readsEntriesWithTheirMembersInOrder() throws {
        let parsed = try entries(
            """
             [ {"body":"t","properties":{"iothub-app-b":"2","iothub-app-a":"1"}} ,
               {"properties":{},"base64Encoded":true,"body":"AAE="},{"base64Encoded":false,"body":""}]\t\r\n
            """)
        #expect(parsed.count == 3)
        #expect(parsed[0].body == Data("t".utf8) && !parsed[0].base64Encoded)
        #expect(parsed[0].properties.map(\.name) == ["iothub-app-b", "iothub-app-a"], "document order, not sorted")
        #expect(parsed[0].properties.map(\.value) == ["2", "1"])
        #expect(parsed[1].body == Data("AAE=".utf8) && parsed[1].base64Encoded && parsed[1].properties.isEmpty)
        #expect(parsed[2].body.isEmpty && !parsed[2].base64Encoded)
        #expect(try entries("[]").isEmpty)
    }

    @Test func unknownMembersOfAnyKindAreSkipped() throws {
        let parsed = try entries(
            #"""
            [{"x":{"a":[1,-2.5e+3,0.0,1E9,true,false,null,"s\"}]",{}],"b":{}},"body":"kept","y":[],"z":-0}]
            """#)
        #expect(parsed.count == 1)
        #expect(
            parsed.first?.body == Data("kept".utf8) && parsed.first?.base64Encoded == false
                && parsed.first?.properties.isEmpty == true)
    }

    @Test func escapesAreDecodedToUTF8() throws {
        let parsed = try entries(
            #"[{"body":"a\"b\\c\/d\b\f\n\r\t\u00e9\u20AC\ud83d\ude00é","properties":{"iothub-app-k\u0041":"v\u0042"}}]"#
        )
        #expect(String(decoding: parsed[0].body, as: UTF8.self) == "a\"b\\c/d\u{8}\u{C}\n\r\té€😀é")
        #expect(parsed[0].properties.map(\.name) == ["iothub-app-kA"])
        #expect(parsed[0].properties.map(\.value) == ["vB"])
    }

    /// Whatever Foundation's JSON encoder writes, the parser reads back to the same strings.
    @Test func agreesWithFoundationOnEncodedStrings() throws {
        var generator = SystemRandomNumberGenerator()
        let alphabet: [Unicode.Scalar] = [
            "a", "\"", "\\", "/", "\n", "\u{0}", "\u{1F}", "\u{7F}", "é", "€", "😀", "\u{FFFF}", " ",
        ]
        for _ in 0..<300 {
            let text = String(
                String.UnicodeScalarView(
                    (0..<Int.random(in: 0...20, using: &generator)).map { _ in
                        alphabet.randomElement(using: &generator) ?? "a"
                    }))
            let document = try JSONSerialization.data(withJSONObject: [
                ["body": text, "properties": ["iothub-app-\(text)": text]]
            ])
            let parsed = try BatchEnvelopeParser.entries(in: document)
            #expect(String(decoding: parsed[0].body, as: UTF8.self) == text)
            #expect(parsed[0].properties.map(\.value) == [text])
        }
    }

    @Test(arguments: [
        ("{}", "not a JSON array"),
        ("", "not a JSON array"),
        ("[1]", "entry 0 is not an object"),
        (#"[{"body":"x"}] x"#, "unexpected data after the array"),
        (#"[{"body":"x"},]"#, "entry 1 is not an object"),
        (#"[{"body":"x"}"#, "',' or ']' after entry 0"),
        (#"[{"body":"x}]"#, "unterminated string"),
        (#"[{"body":1}]"#, "entry 0: body must be a string"),
        (#"[{"body":null}]"#, "entry 0: body must be a string"),
        (#"[{"properties":{}}]"#, "entry 0: the member body is missing"),
        (#"[{"body":"x","body":"y"}]"#, "entry 0: body is given twice"),
        (#"[{"body":"x","base64Encoded":null}]"#, "entry 0: base64Encoded must be true or false"),
        (#"[{"body":"x","base64Encoded":"true"}]"#, "entry 0: base64Encoded must be true or false"),
        (#"[{"body":"x","properties":null}]"#, "entry 0: properties must be an object of strings"),
        (#"[{"body":"x","properties":{"a":1}}]"#, "entry 0: the property a must be a string"),
        (#"[{"body":"x","properties":{"a":"1","a":"2"}}]"#, "entry 0: the property a is given twice"),
        (#"[{"body":"x","properties":{},"properties":{}}]"#, "entry 0: properties is given twice"),
        (#"[{"body":"a\qb"}]"#, "an invalid escape \\q"),
        (#"[{"body":"\u12"}]"#, "four hexadecimal digits"),
        (#"[{"body":"\ud83d"}]"#, "a lone surrogate"),
        (#"[{"body":"\ude00"}]"#, "a lone surrogate"),
        (#"[{"body":"\ud83d\u0041"}]"#, "a lone surrogate"),
        ("[{\"body\":\"a\tb\"}]", "a control character inside a string"),
        (#"[{"body":"x","n":01}]"#, "expected ',' or '}'"),
        (#"[{"body":"x","n":1.}]"#, "not a JSON number"),
        (#"[{"body":"x","n":-}]"#, "not a JSON number"),
        (#"[{"body":"x","n":1e}]"#, "not a JSON number"),
        (#"[{"body":"x","n":tru}]"#, "not a JSON value"),
        (#"[{"body":"x","n":'a'}]"#, "not a JSON value"),
        (#"[{"body" "x"}]"#, "expected ':'"),
        (#"[{body:"x"}]"#, "expected a member name"),
    ])
    func refusals(json: String, reason: String) {
        let failure = failure(Array(json.utf8))
        #expect(failure?.contains(reason) == true, "\(json): \(failure ?? "accepted")")
        #expect(failure?.contains("(at byte ") == true, "says where")
    }

    /// A value that is not JSON where a string, a boolean or an object is expected is a syntax
    /// error, not a value of the wrong type.
    @Test(arguments: [
        (#"[{"body":'x'}]"#, true), (#"[{"body":temp}]"#, true), (#"[{"body":"x","base64Encoded":yes}]"#, true),
        (#"[{"body":"x","properties":{"a":'b'}}]"#, true), (#"[{"body":"x","properties":[}]"#, true),
        (#"[{"body":1}]"#, false), (#"[{"body":{"t":21}}]"#, false), (#"[{"body":"x","properties":{"a":1}}]"#, false),
    ])
    func syntaxErrorsAreToldFromWrongTypes(json: String, isSyntaxError: Bool) {
        do {
            _ = try BatchEnvelopeParser.entries(in: Data(json.utf8))
            Issue.record("\(json) was accepted")
        } catch {
            #expect(error.isSyntaxError == isSyntaxError, "\(json): \(error.reason)")
            #expect(error.reason.contains("must be") != isSyntaxError, "\(json): \(error.reason)")
        }
    }

    @Test func invalidUTF8IsRefused() {
        let document = Array(#"[{"body":""#.utf8) + [0xC3, 0x28] + Array(#""}]"#.utf8)
        #expect(failure(document)?.contains("not valid UTF-8") == true)
    }

    @Test func deepNestingIsRefusedWithoutRecursingWithoutBound() {
        let deep =
            #"[{"body":"x","n":"# + String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000) + "}]"
        #expect(
            failure(Array(deep.utf8))?.contains("nested deeper than \(BatchEnvelopeParser.maximumDepth) levels") == true
        )
    }

    /// Every cut of a valid document is refused, never read past its end.
    @Test func everyTruncationIsRefused() {
        let document = Array(
            #"[{"body":"a\u00e9\n","base64Encoded":false,"properties":{"iothub-app-k":"v"},"x":[1.5e3,{"y":null}]}]"#
                .utf8)
        for length in 0..<document.count {
            #expect(failure(document[..<length]) != nil, "\(length) bytes accepted")
        }
    }
}
