import Foundation

/// Reads the files the commands take secrets and other settings from (connection strings,
/// keys, tokens, certificates, pass phrases): the one place their errors are worded, which never
/// quote what the file holds.
enum SecretFile {
    /// The text of `path` (`-`: standard input).
    /// - Parameter what: what the file holds, for the error (`the API token`).
    static func read(_ path: String, what: String) throws(CommandFailure) -> String {
        let data: Data?
        if path == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            data = FileManager.default.contents(atPath: path)
        }
        guard let data else { throw CommandFailure("cannot read \(what) from \(path)") }
        guard let text = String(data: data, encoding: .utf8) else { throw CommandFailure("\(what) in \(path) is not UTF-8 text") }
        return text
    }
}
