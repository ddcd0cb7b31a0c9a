import ArgumentParser
import CommandLineSupport

#if canImport(Glibc)
    import Glibc
#endif

/// `iothub-sidecar hub`: the local IoT Hub, which is the program `iothub-localhub` installed
/// next to this one; this command becomes it, with the same arguments.
struct HubCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hub",
        abstract: "Run a local IoT Hub (emulator) that devices and Microsoft's SDKs can use.",
        discussion: """
            The same as running iothub-localhub, installed next to iothub-sidecar, with these \
            arguments; `iothub-sidecar hub --help` lists its options.
            """,
        // --help goes to iothub-localhub, which knows the options.
        helpNames: []
    )

    @Argument(parsing: .captureForPassthrough, help: "iothub-localhub's options.")
    var arguments: [String] = []

    func run() throws {
        let path: String
        do {
            path = try LocalHubProcess.locateExecutable()
        } catch {
            StandardStreams.writeError("iothub-sidecar hub: \(error)\n")
            throw ExitCode.failure
        }
        let argv = ([path] + arguments).map { strdup($0) }
        (argv + [nil]).withUnsafeBufferPointer { pointers in
            if let base = pointers.baseAddress { _ = execv(path, base) }
        }
        let reason = String(cString: strerror(errno))
        argv.forEach { free($0) }
        StandardStreams.writeError("iothub-sidecar hub: cannot run \(path): \(reason)\n")
        throw ExitCode.failure
    }
}
