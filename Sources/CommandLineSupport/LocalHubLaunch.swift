import FoundationEssentials

/// What `iothub-sidecar` and `iothub-localhub` agree on: the local hub's default data
/// directory, the executable's name, and the line it prints when ready for a program
/// (`--ready-json`), which `serve --local-hub` reads.
package enum LocalHubLaunch {
    /// The local hub's executable, installed next to `iothub-sidecar`.
    package static let executableName = "iothub-localhub"

    /// `$XDG_DATA_HOME/iothub-sidecar/localhub`, or `~/.local/share/iothub-sidecar/localhub`.
    package static var defaultDataDirectory: String {
        let environment = ProcessInfo.processInfo.environment
        let base = environment["XDG_DATA_HOME"] ?? ((environment["HOME"] ?? ".") + "/.local/share")
        return base + "/iothub-sidecar/localhub"
    }

    /// The one JSON line `iothub-localhub --ready-json` prints on standard output once it serves.
    package struct Readiness: Codable, Sendable {
        package var mqttPort: Int
        package var httpsPort: Int
        package var blobPort: Int
        /// The CA clients must trust, PEM.
        package var caCertificatePEM: String
        /// Each `--device`'s connection string, by device id.
        package var deviceConnectionStrings: [String: String]

        package init(
            mqttPort: Int, httpsPort: Int, blobPort: Int, caCertificatePEM: String,
            deviceConnectionStrings: [String: String]
        ) {
            self.mqttPort = mqttPort
            self.httpsPort = httpsPort
            self.blobPort = blobPort
            self.caCertificatePEM = caCertificatePEM
            self.deviceConnectionStrings = deviceConnectionStrings
        }
    }
}
