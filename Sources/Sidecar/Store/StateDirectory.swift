import DurableLog
public import FoundationEssentials

#if canImport(Glibc)
    import Glibc
#endif

/// The sidecar's state directory (`--state-dir`): the telemetry outbox (`outbox/`), and later
/// the cloud-to-device inbox and a provisioning cache. Created mode 0700, and held with an
/// exclusive lock on its `lock` file for as long as this value lives, so that two sidecars can
/// never share one state directory.
public final class StateDirectory: Sendable {
    /// Why the state directory cannot be used.
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public let path: String
    /// The open lock file, locked; closed (which releases the lock) on deinit.
    private let lockFile: Int32

    /// Creates `path` if missing (its missing parents too, all 0700) and locks it.
    public init(path: String) throws(Failure) {
        self.path = path
        try Self.createPrivateDirectory(path)
        let lockPath = path + "/lock"
        let file = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard file >= 0 else {
            throw Failure(description: "cannot open the state directory's lock file \(lockPath): \(Self.reason())")
        }
        guard flock(file, LOCK_EX | LOCK_NB) == 0 else {
            let busy = errno == EWOULDBLOCK
            let reason = Self.reason()
            close(file)
            throw Failure(
                description: busy
                    ? "the state directory \(path) is in use by another iothub-sidecar (it holds \(lockPath)); give each sidecar its own --state-dir"
                    : "cannot lock the state directory \(path): \(reason)")
        }
        lockFile = file
    }

    deinit {
        close(lockFile)
    }

    /// Where the telemetry outbox keeps its files.
    public var outboxPath: String { path + "/outbox" }
    /// The durable cloud-to-device inbox's files.
    public var inboxPath: String { path + "/inbox" }

    /// The state directory when none is given: `$XDG_STATE_HOME/iothub-sidecar`, else
    /// `~/.local/state/iothub-sidecar`.
    public static func defaultPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let base = environment["XDG_STATE_HOME"], base.hasPrefix("/") { return base + "/iothub-sidecar" }
        return
            (environment["HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? FileManager.default.homeDirectoryForCurrentUser.path)
            + "/.local/state/iothub-sidecar"
    }

    private static func createPrivateDirectory(_ path: String) throws(Failure) {
        do {
            try PrivateDirectory.create(path)
        } catch {
            throw Failure(description: "the state directory: \(error)")
        }
    }

    private static func reason() -> String {
        String(cString: strerror(errno))
    }
}
