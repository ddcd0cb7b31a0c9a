import FoundationEssentials
import IoTHubProtocol

/// Where a command reads the device connection string from: a file named on the command line,
/// or the `IOTHUB_DEVICE_CONNECTION_STRING` environment variable. Never the command line itself,
/// which other users of the machine can read in the process list.
struct ConnectionStringSource {
    static let environmentVariable = "IOTHUB_DEVICE_CONNECTION_STRING"

    /// A file holding the connection string, or `-` for standard input.
    var file: String?

    func load(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ConnectionString {
        let text: String
        let origin: String
        if let file {
            origin = file == "-" ? "standard input" : file
            text = try SecretFile.read(file, what: "the connection string")
        } else if let value = environment[Self.environmentVariable] {
            origin = Self.environmentVariable
            text = value
        } else {
            throw CommandFailure(
                "no connection string: set \(Self.environmentVariable) or pass --connection-string-file FILE")
        }
        do {
            return try ConnectionString(parsing: text.trimmingWhitespaceAndNewlines())
        } catch {
            throw CommandFailure("the connection string in \(origin) is invalid: \(error)")
        }
    }
}
