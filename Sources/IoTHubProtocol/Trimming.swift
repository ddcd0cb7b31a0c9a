extension StringProtocol {
    /// The text without the white space and line ends at either end (what a secret file or a
    /// pasted value carries around it). As Foundation's `.whitespacesAndNewlines`: Unicode white
    /// space, which includes `\t`, `\n`, `\r\n` and U+0085.
    package func trimmingWhitespaceAndNewlines() -> String { trimming(while: \.isWhitespace) }

    /// The text without the spaces and tabs (no line ends) at either end: a header's or a
    /// parameter's value. As Foundation's `.whitespaces`.
    package func trimmingWhitespace() -> String { trimming { $0.isWhitespace && !$0.isNewline } }

    /// The text without the line ends at either end (a pass phrase may begin or end with a
    /// space). As Foundation's `.newlines`.
    package func trimmingNewlines() -> String { trimming(while: \.isNewline) }

    private func trimming(while isTrimmed: (Character) -> Bool) -> String {
        let start = firstIndex { !isTrimmed($0) } ?? endIndex
        let end = self[start...].lastIndex { !isTrimmed($0) }.map { index(after: $0) } ?? start
        return String(self[start..<end])
    }
}
