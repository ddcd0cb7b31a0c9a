/// The name a device gives a file it uploads (`get_storage_info_for_blob`). The hub stores the
/// file as `{deviceId}/{name}` in blob storage, where `/` separates folders and URLs resolve
/// `.` and `..` segments: a name with such segments, or with empty ones, would land elsewhere
/// than asked (`../x` outside the device's folder), so it is refused before anything is sent.
/// So are the names Azure's blob naming rules call unsafe.
public enum BlobName {
    /// Azure's limit for a blob name, in characters (UTF-16 code units, as Azure counts them).
    public static let maximumLength = 1024
    /// Azure's limit for the number of `/`-separated segments of a blob name.
    public static let maximumSegments = 254

    /// Throws `ValueError` (field `blob_name`) unless `name` is a blob name storage reads as
    /// written: 1 to ``maximumLength`` characters, at most ``maximumSegments`` segments, no
    /// empty segment (a leading or trailing `/`, or `//`), no `.` or `..` segment (also not
    /// once percent-decoded, as a client that puts the name into a URL unencoded would send
    /// it), no `\`, no control character, and no `.` at the end (storage drops it).
    public static func validate(_ name: String) throws(IoTHubError) {
        func refuse(_ reason: String) -> IoTHubError { .valueError(field: "blob_name", reason: reason) }
        guard !name.isEmpty else { throw refuse("is empty") }
        let length = name.utf16.count
        guard length <= maximumLength else {
            throw refuse("is \(length) characters long; at most \(maximumLength) are allowed")
        }
        if let control = name.unicodeScalars.first(where: isControl) {
            throw refuse("contains the control character U+\(hex(control.value))")
        }
        guard !name.utf8.contains(UInt8(ascii: "\\")) else { throw refuse("contains \\, which some clients send as /") }
        try checkSegments(of: name, decoded: false)
        let decoded = PercentEncoding.decode(name)
        if decoded != name { try checkSegments(of: decoded, decoded: true) }
        guard !name.hasSuffix(".") else { throw refuse("ends with '.', which blob storage drops") }
    }

    private static func checkSegments(of name: String, decoded: Bool) throws(IoTHubError) {
        let form = decoded ? " once percent-decoded" : ""
        let segments = name.split(separator: "/", omittingEmptySubsequences: false)
        guard !segments.contains(where: \.isEmpty) else {
            throw .valueError(
                field: "blob_name", reason: "has an empty path segment\(form) (it starts or ends with / or contains //)"
            )
        }
        guard segments.count <= maximumSegments else {
            throw .valueError(
                field: "blob_name",
                reason: "has \(segments.count) path segments\(form); at most \(maximumSegments) are allowed")
        }
        if let dots = segments.first(where: { $0 == "." || $0 == ".." }) {
            throw .valueError(
                field: "blob_name",
                reason: "has the path segment '\(dots)'\(form), which URLs read as a folder, not a name")
        }
    }

    /// C0 and C1 control characters and DEL: Azure refuses them in blob names.
    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }

    private static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}
