import Foundation

/// `If-Match` handling shared by identities and twins.
enum ETag {
    /// The etag an `If-Match` header asks for, without quotes, spaces or a weak `W/` prefix;
    /// `*` matches anything; nil when there is no header.
    static func requested(_ header: String?) -> String? {
        guard var value = header?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        if value.hasPrefix("W/") { value.removeFirst(2) }
        return value.trimmingCharacters(in: CharacterSet(charactersIn: "\" "))
    }

    /// Whether a request with this `If-Match` header may change something whose etag is `current`.
    static func matches(_ header: String?, current: String) -> Bool {
        guard let wanted = requested(header) else { return true }
        return wanted == "*" || wanted == current
    }
}
