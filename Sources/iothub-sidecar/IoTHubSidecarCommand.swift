import ArgumentParser

/// `iothub-sidecar`: the command-line entry point.
@main
struct IoTHubSidecarCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iothub-sidecar",
        abstract: "Azure IoT Hub device client as a local HTTP sidecar.",
        discussion: """
            Programs in any language talk to Azure IoT Hub as a device through this tool. \
            Credentials are read from the environment or from files, never from the command line.
            """,
        subcommands: [ServeCommand.self, HubCommand.self, SASTokenCommand.self],
        defaultSubcommand: ServeCommand.self
    )
}
