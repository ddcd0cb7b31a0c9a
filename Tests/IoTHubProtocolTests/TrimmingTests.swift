import Foundation
import Testing

@testable import IoTHubProtocol

/// The trimming the commands and parsers use instead of Foundation's `trimmingCharacters(in:)`
/// (not in FoundationEssentials), checked against it.
@Suite struct TrimmingTests {
    static let samples = [
        "", " ", "\n", "\r\n", "a", " a ", "\t a b \t", "a\n", "\r\na b\r\n", " \n a \n ", "\u{85}a\u{2028}",
        "\u{A0}a\u{3000}", "é\u{301} ", "\n\n", "\u{2003}a\u{202F}",
    ]

    @Test(arguments: samples)
    func likeFoundationsWhitespaceAndNewlines(text: String) {
        #expect(text.trimmingWhitespaceAndNewlines() == text.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(text[...].trimmingWhitespaceAndNewlines() == text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    @Test(arguments: samples)
    func likeFoundationsWhitespaces(text: String) {
        #expect(text.trimmingWhitespace() == text.trimmingCharacters(in: .whitespaces))
    }

    @Test(arguments: samples)
    func likeFoundationsNewlines(text: String) {
        #expect(text.trimmingNewlines() == text.trimmingCharacters(in: .newlines))
    }

    /// The one difference seen: Foundation on Linux counts U+200B (zero-width space) as white
    /// space; Unicode does not, and neither do these.
    @Test func aZeroWidthSpaceIsKept() {
        #expect(" \u{200B}x".trimmingWhitespaceAndNewlines() == "\u{200B}x")
    }
}
