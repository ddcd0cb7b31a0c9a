import CommandLineSupport
import Dispatch
import FoundationEssentials
import Logging
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The local hub of `serve --local-hub`: `iothub-localhub` as a child process, so the sidecar
/// binary carries none of LocalHub (docs/ARCHITECTURE.md, "Modules"). The child runs in a
/// process group of its own (a terminal's Ctrl-C reaches the sidecar, which drains to the hub
/// before it stops it), reads a pipe the sidecar holds as its standard input (when it closes,
/// because the sidecar is gone, `kill -9` included, the hub exits at once), and reports its ports, CA and the device's connection string as one
/// JSON line on a pipe. As a service it is the first of the group: stopped last, with SIGTERM
/// (SIGKILL after 15 s); if it ends on its own the sidecar ends with an error.
struct LocalHubProcess: Service {
    /// What the hub reported when it was ready.
    let readiness: LocalHubLaunch.Readiness
    private let child: Child
    /// The child's wait status, once it has ended.
    private let exit: Task<Int32, Never>
    /// The writing end of the child's standard input, open while the sidecar runs.
    private let lifeline: Int32

    /// The child's process id, which may be signalled only until the child is reaped (then the
    /// id can be another process's).
    private final class Child: Sendable {
        let processId: pid_t
        private let reaped = Mutex(false)

        init(processId: pid_t) {
            self.processId = processId
        }

        /// Sends `signal` unless the child has been reaped.
        func send(_ signal: Int32) {
            reaped.withLock { reaped in
                if !reaped { kill(processId, signal) }
            }
        }

        /// Blocks until the child ends, then reaps it; returns its wait status.
        func waitForExit() -> Int32 {
            var information = siginfo_t()
            // Waits without reaping, so that `send` cannot reach a process that took the id.
            while waitid(P_PID, id_t(processId), &information, WEXITED | WNOWAIT) == -1, errno == EINTR {}
            return reaped.withLock { reaped in
                var status: Int32 = 0
                while waitpid(processId, &status, 0) == -1, errno == EINTR {}
                reaped = true
                return status
            }
        }
    }

    /// Starts `iothub-localhub` with `arguments` (to which `--ready-json` and `--exit-with-parent`
    /// are added) and waits until it is ready, at most `timeout`.
    static func start(arguments: [String], timeout: Duration = .seconds(60)) async throws(LocalHubProcessError)
        -> LocalHubProcess
    {
        let executable = try locateExecutable()
        var pipeEnds: [Int32] = [0, 0]
        var lifelineEnds: [Int32] = [0, 0]
        guard pipe(&pipeEnds) == 0 else { throw .init("cannot make a pipe: \(errnoText())") }
        guard pipe(&lifelineEnds) == 0 else {
            pipeEnds.forEach { close($0) }
            throw .init("cannot make a pipe: \(errnoText())")
        }
        // The hub's report comes back on the first pipe; the second is its lifeline: the
        // sidecar holds the writing end until it ends. No end is inherited as it is: the child
        // gets its two as standard output and input.
        let (readEnd, writeEnd) = (pipeEnds[0], pipeEnds[1])
        let (lifelineChildEnd, lifeline) = (lifelineEnds[0], lifelineEnds[1])
        for end in pipeEnds + lifelineEnds { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        let processId: pid_t
        do {
            processId = try spawn(
                executable, arguments: arguments + ["--ready-json", "--exit-with-parent"],
                standardInput: lifelineChildEnd, standardOutput: writeEnd)
        } catch {
            (pipeEnds + lifelineEnds).forEach { close($0) }
            throw error
        }
        close(writeEnd)
        close(lifelineChildEnd)
        let child = Child(processId: processId)
        let exit = Task<Int32, Never> {
            await withCheckedContinuation { continuation in
                DispatchQueue(label: "iothub-sidecar.local-hub-wait").async {
                    continuation.resume(returning: child.waitForExit())
                }
            }
        }
        let line = await withTaskGroup(of: String?.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    DispatchQueue(label: "iothub-sidecar.local-hub-ready").async {
                        continuation.resume(returning: readLine(from: readEnd))
                    }
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                // A hub that never reports: ending it ends the blocked read, which the group
                // waits for before it returns.
                if !Task.isCancelled { child.send(SIGKILL) }
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        guard let line, let readiness = try? JSONDecoder().decode(LocalHubLaunch.Readiness.self, from: Data(line.utf8))
        else {
            child.send(SIGKILL)
            let status = await exit.value
            close(readEnd)
            close(lifeline)
            throw .init("\(LocalHubLaunch.executableName) did not start (\(describe(status: status)))")
        }
        close(readEnd)
        return LocalHubProcess(readiness: readiness, child: child, exit: exit, lifeline: lifeline)
    }

    func run() async throws {
        let status = await withGracefulShutdownHandler {
            await exit.value
        } onGracefulShutdown: { [child] in
            child.send(SIGTERM)
            Task {
                try? await Task.sleep(for: .seconds(15))
                child.send(SIGKILL)
            }
        }
        close(lifeline)
        if !Task.isShuttingDownGracefully {
            throw LocalHubProcessError("the local hub ended (\(Self.describe(status: status)))")
        }
    }

    /// `iothub-localhub` next to this program, else on `PATH`.
    static func locateExecutable() throws(LocalHubProcessError) -> String {
        var directories: [String] = []
        if let own = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            directories.append(URL(fileURLWithPath: own).deletingLastPathComponent().path)
        }
        directories += (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        let candidates = directories.map { "\($0)/\(LocalHubLaunch.executableName)" }
        guard let found = candidates.first(where: { access($0, X_OK) == 0 }) else {
            throw .init(
                "\(LocalHubLaunch.executableName) is not installed next to iothub-sidecar or on PATH "
                    + "(`swift build` builds both; the container image has only iothub-sidecar)")
        }
        return found
    }

    /// posix_spawn with the given standard input and output, its own process group, and SIGINT,
    /// SIGTERM and SIGPIPE at their defaults.
    private static func spawn(_ path: String, arguments: [String], standardInput: Int32, standardOutput: Int32)
        throws(LocalHubProcessError) -> pid_t
    {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, standardInput, 0)
        posix_spawn_file_actions_adddup2(&actions, standardOutput, 1)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGINT, SIGTERM, SIGPIPE] { sigaddset(&defaults, signal) }
        var noneBlocked = sigset_t()
        sigemptyset(&noneBlocked)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &noneBlocked)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        let argv = ([path] + arguments).map { strdup($0) }
        defer { argv.forEach { free($0) } }
        var processId: pid_t = 0
        let result = (argv + [nil]).withUnsafeBufferPointer { arguments in
            guard let base = arguments.baseAddress else { return EINVAL }
            return posix_spawn(&processId, path, &actions, &attributes, base, environ)
        }
        guard result == 0 else {
            throw .init("cannot start \(path): \(String(cString: strerror(result)))")
        }
        return processId
    }

    /// Reads up to the first newline (or the end) of `descriptor`; nil when nothing came.
    private static func readLine(from descriptor: Int32) -> String? {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += buffer.prefix(count)
            if let newline = bytes.firstIndex(of: UInt8(ascii: "\n")) {
                return String(decoding: bytes[..<newline], as: UTF8.self)
            }
        }
        return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
    }

    private static func describe(status: Int32) -> String {
        let signal = status & 0x7f
        if signal == 0 { return "exit status \((status >> 8) & 0xff)" }
        return "signal \(signal)"
    }

    private static func errnoText() -> String { String(cString: strerror(errno)) }
}

/// Why the local hub could not be started or ended on its own.
struct LocalHubProcessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
