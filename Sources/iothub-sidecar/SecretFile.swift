import CommandLineSupport
import FoundationEssentials

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Reads the files the commands take secrets and other settings from (connection strings,
/// keys, tokens, certificates, pass phrases): the one place their errors are worded, which never
/// quote what the file holds, and say why a file cannot be read: it is missing, it is a
/// directory, or this user may not read it.
enum SecretFile {
    /// The text of `path` (`-`: standard input).
    /// - Parameter what: what the file holds, for the error (`the API token`).
    static func read(_ path: String, what: String) throws(CommandFailure) -> String {
        let data: Data?
        if path == "-" {
            data = StandardStreams.readInput().map { Data($0) }
        } else {
            var info = stat()
            if stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR {
                throw CommandFailure("cannot read \(what) from \(path): it is a directory, not a file")
            }
            data = FileManager.default.contents(atPath: path)
            if data == nil { throw CommandFailure("cannot read \(what) from \(path): \(reason(path))") }
        }
        guard let data else { throw CommandFailure("cannot read \(what) from \(path)") }
        guard let text = String(data: data, encoding: .utf8) else {
            throw CommandFailure("\(what) in \(path) is not UTF-8 text")
        }
        return text
    }

    /// Why `path` cannot be opened for reading, in words for the person who named it.
    private static func reason(_ path: String) -> String {
        let file = open(path, O_RDONLY | O_CLOEXEC)
        let code = errno
        if file >= 0 {
            close(file)
            return "reading it failed"
        }
        switch code {
        case ENOENT:
            return "there is no such file"
        case ENOTDIR:
            return "a part of the path is not a directory"
        case EACCES, EPERM:
            var info = stat()
            if stat(path, &info) == 0 {
                return
                    "permission denied: the file is mode \(String(info.st_mode & 0o777, radix: 8)), owned by uid \(info.st_uid), and this process runs as uid \(getuid())"
            }
            return "permission denied (a directory on the way may not be searched)"
        default:
            return String(cString: strerror(code))
        }
    }
}
