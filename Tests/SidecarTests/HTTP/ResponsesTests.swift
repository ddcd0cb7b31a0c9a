import Foundation
import IoTHubProtocol
import Testing

@testable import Sidecar

@Suite struct ResponsesTests {
    @Test func quotedStringsAreValidJSON() throws {
        for text in ["plain", "quote\" backslash\\ newline\n tab\t", "\u{01}\u{1f}", "ünïcödé ✓", ""] {
            let json = try JSONValue(parsing: Data(JSONText.quoted(text).utf8))
            #expect(json == .string(text))
        }
    }
}
