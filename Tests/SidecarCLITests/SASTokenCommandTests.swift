import Foundation
import IoTHubProtocol
import Testing

/// Runs the built `iothub-sidecar` binary as a user would.
struct CLI {
    struct Result {
        var status: Int32
        var standardOutput: String
        var standardError: String
    }

    /// The executable beside the test bundle in the build directory.
    static var executable: URL {
        var directory = Bundle.module.bundleURL.deletingLastPathComponent()
        let candidate = directory.appendingPathComponent("iothub-sidecar")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        directory = URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(
            ".build/debug")
        return directory.appendingPathComponent("iothub-sidecar")
    }

    static func run(_ arguments: [String], environment: [String: String] = [:], input: String? = nil) throws -> Result {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        // A minimal environment, so a connection string in the developer's shell cannot leak in.
        process.environment = ["PATH": "/usr/bin:/bin"].merging(environment) { _, new in new }
        let output = Pipe()
        let error = Pipe()
        let stdin = Pipe()
        process.standardOutput = output
        process.standardError = error
        process.standardInput = stdin
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try stdin.fileHandleForWriting.close()
        let outputData = output.fileHandleForReading.readDataToEndOfFile()
        let errorData = error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(
            status: process.terminationStatus,
            standardOutput: String(decoding: outputData, as: UTF8.self),
            standardError: String(decoding: errorData, as: UTF8.self))
    }
}

/// `Fixtures/cli_tokens.json`: tokens Python computed for expiry 1900000000.
struct CLITokenCase: Decodable, Sendable, CustomTestStringConvertible {
    var name: String
    var connectionString: String
    var expiry: Int
    var token: String

    var testDescription: String { name }

    static let all: [CLITokenCase] = {
        guard let url = Bundle.module.url(forResource: "cli_tokens", withExtension: "json", subdirectory: "Fixtures"),
            let data = try? Data(contentsOf: url)
        else { return [] }
        return (try? JSONDecoder().decode([CLITokenCase].self, from: data)) ?? []
    }()
}

@Suite(.serialized) struct SASTokenCommandTests {
    @Test func fixturesAreLoaded() {
        #expect(CLITokenCase.all.map(\.name) == ["device", "module", "policy"])
    }

    @Test(arguments: CLITokenCase.all)
    func printsExactlyPythonsTokenFromTheEnvironment(_ testCase: CLITokenCase) throws {
        let result = try CLI.run(
            ["sas-token", "--expiry", String(testCase.expiry)],
            environment: ["IOTHUB_DEVICE_CONNECTION_STRING": testCase.connectionString])
        #expect(result.status == 0, "\(result.standardError)")
        #expect(result.standardOutput == testCase.token + "\n")
        #expect(result.standardError.isEmpty)
    }

    @Test(arguments: CLITokenCase.all)
    func readsAFileOrStandardInput(_ testCase: CLITokenCase) throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("cs-\(UUID().uuidString)")
        try Data((testCase.connectionString + "\n").utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let fromFile = try CLI.run(["sas-token", "--connection-string-file", file.path, "--expiry", "1900000000"])
        #expect(fromFile.standardOutput == testCase.token + "\n")
        let fromStdin = try CLI.run(
            ["sas-token", "--connection-string-file", "-", "--expiry", "1900000000"], input: testCase.connectionString)
        #expect(fromStdin.standardOutput == testCase.token + "\n")
    }

    @Test func ttlIsCountedFromNow() throws {
        let device = try #require(CLITokenCase.all.first)
        let before = Int(Date().timeIntervalSince1970)
        let result = try CLI.run(
            ["sas-token", "--ttl", "120"], environment: ["IOTHUB_DEVICE_CONNECTION_STRING": device.connectionString])
        let after = Int(Date().timeIntervalSince1970)
        let token = try SASToken(parsing: result.standardOutput.trimmingCharacters(in: .newlines))
        #expect((before + 120...after + 120).contains(token.expiry))
        let key = try #require(device.connectionString.components(separatedBy: "SharedAccessKey=").last)
        #expect(token.isSigned(withKey: key))
    }

    static let failures: [(arguments: [String], environment: [String: String], mentions: String)] = [
        (["sas-token"], [:], "IOTHUB_DEVICE_CONNECTION_STRING"),
        (["sas-token", "--connection-string-file", "/nonexistent/cs"], [:], "/nonexistent/cs"),
        (["sas-token"], ["IOTHUB_DEVICE_CONNECTION_STRING": "HostName=h;DeviceId=d"], "SharedAccessKey is missing"),
        (["sas-token"], ["IOTHUB_DEVICE_CONNECTION_STRING": "HostName=h;DeviceId=d;x509=true"], "no SharedAccessKey"),
        (
            ["sas-token"], ["IOTHUB_DEVICE_CONNECTION_STRING": "HostName=h;DeviceId=d;Key=abc"],
            "unknown key in segment 3 of 3"
        ),
        (["sas-token", "--ttl", "5", "--expiry", "5"], [:], "not both"),
        (["sas-token", "--ttl", "0"], [:], "--ttl"),
        (["sas-token", "--connection-string", "x"], [:], "--connection-string"),
    ]

    @Test(arguments: failures)
    func failsWithOneClearLineOnStandardError(
        _ testCase: (arguments: [String], environment: [String: String], mentions: String)
    ) throws {
        let result = try CLI.run(testCase.arguments, environment: testCase.environment)
        #expect(result.status != 0)
        #expect(result.standardOutput.isEmpty)
        #expect(result.standardError.contains(testCase.mentions), "\(result.standardError)")
    }

    @Test func helpExplainsWhereTheConnectionStringComesFrom() throws {
        let result = try CLI.run(["sas-token", "--help"])
        #expect(result.status == 0)
        #expect(result.standardOutput.contains("IOTHUB_DEVICE_CONNECTION_STRING"))
        #expect(result.standardOutput.contains("--connection-string-file"))
        let top = try CLI.run(["--help"])
        #expect(top.standardOutput.contains("sas-token"))
    }

    @Test func errorsNeverEchoTheKey() throws {
        let key = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY="
        let result = try CLI.run(
            ["sas-token"], environment: ["IOTHUB_DEVICE_CONNECTION_STRING": "HostName=h;SharedAccessKey=\(key)"])
        #expect(result.status != 0)
        #expect(!result.standardError.contains(key))
    }
}
