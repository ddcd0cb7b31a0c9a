import Foundation

/// Request ids (`$rid`) for twin operations the client starts.
public enum RequestID {
    /// A fresh, unique request id (a UUID in lower case, as Microsoft's SDKs use).
    public static func make() -> String {
        UUID().uuidString.lowercased()
    }
}
