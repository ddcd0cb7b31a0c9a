import Foundation
import IoTHubProtocol
import Testing

@Suite struct JSONValueTests {
    @Test func parsesEveryKindAndKeepsIntegersExact() throws {
        let value = try JSONValue(
            parsing: Data(#"{"n":null,"b":true,"i":9007199254740993,"d":1.5,"s":"x","a":[1,"y"],"o":{"k":{}}}"#.utf8))
        #expect(
            value == [
                "n": nil, "b": true, "i": .integer(9_007_199_254_740_993), "d": 1.5, "s": "x",
                "a": [1, "y"], "o": ["k": [:]],
            ])
        #expect(try JSONValue(parsing: value.encoded()) == value)
        #expect(value["i"]?.intValue == 9_007_199_254_740_993)
        #expect(value["d"]?.intValue == nil)
    }

    @Test func encodesCompactlyWithSortedKeys() {
        let value: JSONValue = ["b": 1, "a": ["x/y", 2.5, false, nil]]
        #expect(String(decoding: value.encoded(), as: UTF8.self) == #"{"a":["x/y",2.5,false,null],"b":1}"#)
    }

    @Test func rejectsNonJSON() {
        #expect(throws: IoTHubError.valueError(field: "body", reason: "is not valid JSON")) {
            try JSONValue(parsing: Data("{nope".utf8))
        }
    }

    @Test func mergePatchFollowsRFC7386() {
        // Cases from RFC 7386, appendix A.
        let cases: [(JSONValue, JSONValue, JSONValue)] = [
            (["a": "b"], ["a": "c"], ["a": "c"]),
            (["a": "b"], ["b": "c"], ["a": "b", "b": "c"]),
            (["a": "b"], ["a": nil], [:]),
            (["a": "b", "b": "c"], ["a": nil], ["b": "c"]),
            (["a": ["b"]], ["a": "c"], ["a": "c"]),
            (["a": "c"], ["a": ["b"]], ["a": ["b"]]),
            (["a": ["b": "c"]], ["a": ["b": "d", "c": nil]], ["a": ["b": "d"]]),
            (["a": [["b": "c"]]], ["a": [1]], ["a": [1]]),
            (["e": nil], ["a": 1], ["e": nil, "a": 1]),
            ([1, 2], ["a": "b", "c": nil], ["a": "b"]),
            ([:], ["a": ["bb": ["ccc": nil]]], ["a": ["bb": [:]]]),
        ]
        for (target, patch, expected) in cases {
            #expect(target.merging(patch) == expected)
        }
    }
}
