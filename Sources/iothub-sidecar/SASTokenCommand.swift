import ArgumentParser
import CommandLineSupport
import FoundationEssentials
import IoTHubProtocol

/// `iothub-sidecar sas-token`: prints a SAS token for the identity of a connection string.
struct SASTokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sas-token",
        abstract: "Print a SAS token for the identity in a connection string.",
        discussion: """
            Signs a token with the connection string's SharedAccessKey, like \
            `az iot hub generate-sas-token`. Device and module strings give device tokens; \
            policy strings (SharedAccessKeyName=…) give service tokens. The connection string \
            comes from \(ConnectionStringSource.environmentVariable) or --connection-string-file. \
            Only the token is printed on standard output.
            """
    )

    @Option(
        name: .customLong("connection-string-file"),
        help: ArgumentHelp(
            "Read the connection string from this file ('-' for standard input) instead of \(ConnectionStringSource.environmentVariable).",
            valueName: "file"))
    var connectionStringFile: String?

    @Option(
        help: ArgumentHelp(
            "Seconds from now until the token expires; default \(SASToken.defaultTimeToLive).", valueName: "seconds"))
    var ttl: Int?

    @Option(
        help: ArgumentHelp(
            "Exact expiry in seconds since 1970-01-01 UTC (instead of --ttl).", valueName: "unix-seconds"))
    var expiry: Int?

    func validate() throws {
        if ttl != nil, expiry != nil {
            throw ValidationError("give either --ttl or --expiry, not both")
        }
        if let ttl, ttl <= 0 {
            throw ValidationError("--ttl must be a positive number of seconds")
        }
        if let expiry, expiry <= 0 {
            throw ValidationError("--expiry must be a positive number of seconds since 1970")
        }
    }

    func run() throws {
        do {
            print(try makeToken().string)
        } catch {
            StandardStreams.writeError("iothub-sidecar sas-token: \(error)\n")
            throw ExitCode.failure
        }
    }

    private func makeToken() throws -> SASToken {
        let connectionString = try ConnectionStringSource(file: connectionStringFile).load()
        guard case .sharedAccessKey(let key) = connectionString.credential else {
            throw CommandFailure(
                "the connection string has no SharedAccessKey to sign with (it uses \(connectionString.credentialKind))"
            )
        }
        let expiry = self.expiry ?? Int(Date().timeIntervalSince1970) + (ttl ?? SASToken.defaultTimeToLive)
        return try SASToken(
            resourceURI: connectionString.resourceURI, key: key, expiry: expiry,
            keyName: connectionString.sharedAccessKeyName)
    }
}

extension ConnectionString {
    /// The name of the credential's connection-string key, for messages.
    fileprivate var credentialKind: String {
        switch credential {
        case .sharedAccessKey: "SharedAccessKey"
        case .sharedAccessSignature: "SharedAccessSignature"
        case .x509: "x509=true"
        }
    }
}
