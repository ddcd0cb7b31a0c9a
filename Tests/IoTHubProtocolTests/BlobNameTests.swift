import IoTHubProtocol
import Testing

@Suite struct BlobNameTests {
    @Test(arguments: [
        "report.csv", "logs/today.txt", "a..b/c.txt", ".hidden/x", "v1.2/..data", "x/y..z", "Grüße/日本.txt",
        "100%25.txt",
        "a%2Fb", String(repeating: "x", count: BlobName.maximumLength),
        Array(repeating: "s", count: BlobName.maximumSegments).joined(separator: "/"),
    ])
    func acceptsNamesStorageReadsAsWritten(_ name: String) throws {
        try BlobName.validate(name)
    }

    @Test(arguments: [
        ("", "is empty"),
        (
            String(repeating: "x", count: BlobName.maximumLength + 1),
            "is 1025 characters long; at most 1024 are allowed"
        ),
        ("../../x", "has the path segment '..', which URLs read as a folder, not a name"),
        ("a/../b", "has the path segment '..', which URLs read as a folder, not a name"),
        ("..", "has the path segment '..', which URLs read as a folder, not a name"),
        ("./x", "has the path segment '.', which URLs read as a folder, not a name"),
        ("a/./b", "has the path segment '.', which URLs read as a folder, not a name"),
        ("a//b", "has an empty path segment (it starts or ends with / or contains //)"),
        ("/x", "has an empty path segment (it starts or ends with / or contains //)"),
        ("x/", "has an empty path segment (it starts or ends with / or contains //)"),
        ("%2e%2e/x", "has the path segment '..' once percent-decoded, which URLs read as a folder, not a name"),
        ("a/%2E%2e/b", "has the path segment '..' once percent-decoded, which URLs read as a folder, not a name"),
        ("a%2F..%2Fb", "has the path segment '..' once percent-decoded, which URLs read as a folder, not a name"),
        ("a%2F%2Fb", "has an empty path segment once percent-decoded (it starts or ends with / or contains //)"),
        ("a\\b", "contains \\, which some clients send as /"),
        ("a\u{1}b", "contains the control character U+0001"),
        ("a\u{7F}b", "contains the control character U+007F"),
        ("a\u{85}b", "contains the control character U+0085"),
        ("x.", "ends with '.', which blob storage drops"),
        (
            Array(repeating: "s", count: BlobName.maximumSegments + 1).joined(separator: "/"),
            "has 255 path segments; at most 254 are allowed"
        ),
    ])
    func refusesNamesStorageWouldMisread(_ testCase: (String, String)) {
        let (name, reason) = testCase
        #expect(throws: IoTHubError.valueError(field: "blob_name", reason: reason)) { try BlobName.validate(name) }
    }

    @Test func countsCharactersAsAzureDoes() throws {
        // Azure counts UTF-16 code units: 512 characters outside the BMP are 1024 of them.
        try BlobName.validate(String(repeating: "😀", count: 512))
        #expect(throws: IoTHubError.self) { try BlobName.validate(String(repeating: "😀", count: 512) + "x") }
    }
}
