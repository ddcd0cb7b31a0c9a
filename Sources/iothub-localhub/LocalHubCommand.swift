import ArgumentParser
import CommandLineSupport
import Foundation
import LocalHub
import Logging
import ServiceLifecycle

/// `iothub-localhub` (also `iothub-sidecar hub`): runs the local IoT Hub on its own. A program
/// of its own, so that the sidecar users deploy carries none of it; `iothub-sidecar serve
/// --local-hub` starts it as a child process.
@main
struct LocalHubCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iothub-localhub",
        abstract: "Run a local IoT Hub (emulator) that devices and Microsoft's SDKs can use.",
        discussion: """
            Serves MQTT over TLS, HTTPS (IoT Hub's service API, device file upload, MQTT over \
            WebSockets at /$iothub/websocket, and the emulator's /local API) and blob storage. \
            Certificates, keys and the registry live in the data directory; clients must trust \
            its ca.pem. The owner policy's connection string is in its service-connection-string \
            file. It also serves a Device Provisioning Service on the same ports: its ID scope \
            is in dps-id-scope, its service policy's connection string in \
            provisioning-service-connection-string. Stop it with Ctrl-C or SIGTERM.
            """
    )

    @Option(
        name: .customLong("data-dir"),
        help: ArgumentHelp("Directory for certificates, keys and state (created if missing).", valueName: "dir"))
    var dataDirectory: String = LocalHubLaunch.defaultDataDirectory

    @Option(
        name: .customLong("hostname"),
        help: ArgumentHelp("The hub's host name, as devices' connection strings give it.", valueName: "name"))
    var hostName: String = "localhost"

    @Option(
        name: .customLong("bind"),
        help: ArgumentHelp(
            "Address to listen on. Keep 127.0.0.1 unless other hosts must connect.", valueName: "address"))
    var bindAddress: String = "127.0.0.1"

    @Option(name: .customLong("mqtt-port"), help: "Port for MQTT over TLS (IoT Hub uses 8883; 0 picks a free port).")
    var mqttPort: Int = 8883

    @Option(
        name: .customLong("https-port"),
        help: "Port for HTTPS and MQTT over WebSockets (IoT Hub uses 443; 0 picks a free port).")
    var httpsPort: Int = 8443

    @Option(
        name: .customLong("blob-port"), help: "Port for the blob storage that file uploads go to (0 picks a free port)."
    )
    var blobPort: Int = 10000

    @Option(
        name: .customLong("device"),
        help: ArgumentHelp(
            "Register this device (if new) and print its connection string. Repeatable.", valueName: "id"))
    var devices: [String] = []

    @Option(
        name: .customLong("edge-device"),
        help: ArgumentHelp(
            "Play the IoT Edge runtime for this device (registered if new): its modules get SAS tokens signed by the workload API (--edge-workload-socket) and their IOTEDGE_* variables from GET /local/edge-environment?moduleId=…",
            valueName: "id"))
    var edgeDevice: String?

    @Option(
        name: .customLong("edge-workload-socket"),
        help: ArgumentHelp(
            "The unix socket of the IoT Edge workload API (trust bundle, signing with a module's key); with --edge-device.",
            valueName: "path"))
    var edgeWorkloadSocket: String?

    @Option(
        name: .customLong("telemetry-bytes"),
        help: ArgumentHelp(
            "How much memory the record of received telemetry (GET /local/telemetry) may take; the oldest messages go first. Default 67108864 (64 MiB).",
            valueName: "bytes"))
    var telemetryBytes: Int = 64 << 20

    @Option(name: .customLong("log-level"), help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Flag(
        name: .customLong("ready-json"),
        help:
            "When ready, print one JSON line for a program (ports, CA, devices' connection strings) instead of the text."
    )
    var readyJSON = false

    @Flag(
        name: .customLong("exit-with-parent"),
        help: ArgumentHelp(
            "Exit at once when standard input, a pipe the parent holds, closes: the hub never outlives it, kill -9 included (iothub-sidecar serve --local-hub uses this)."
        ))
    var exitWithParent = false

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        guard (edgeDevice == nil) == (edgeWorkloadSocket == nil) else {
            throw ValidationError("--edge-device and --edge-workload-socket go together")
        }
        if let edgeWorkloadSocket, !edgeWorkloadSocket.hasPrefix("/") {
            throw ValidationError("--edge-workload-socket must be an absolute path")
        }
        guard telemetryBytes > 0 else { throw ValidationError("--telemetry-bytes must be a positive number of bytes") }
        for (name, port) in [("--mqtt-port", mqttPort), ("--https-port", httpsPort), ("--blob-port", blobPort)]
        where !(0...65535).contains(port) {
            throw ValidationError("\(name) must be from 0 to 65535")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in LineLogHandler(label: label, level: level) }
        let logger = Logger(label: "localhub")
        let configuration = LocalHub.Configuration(
            hostName: hostName, bindAddress: bindAddress, mqttPort: mqttPort, httpsPort: httpsPort, blobPort: blobPort,
            dataDirectory: dataDirectory, devices: devices, telemetryByteCapacity: telemetryBytes,
            edgeDeviceId: edgeDevice, edgeWorkloadSocketPath: edgeWorkloadSocket)
        for (what, port, flag) in [
            ("MQTT", mqttPort, "--mqtt-port"), ("HTTPS", httpsPort, "--https-port"),
            ("blob storage", blobPort, "--blob-port"),
        ]
        where PortCheck.isInUse(host: bindAddress, port: port) {
            FileHandle.standardError.write(
                Data(
                    "iothub-localhub: \(PortCheck.busy("the local hub's \(what)", host: bindAddress, port: port, flag: "\(flag) (0 picks a free one)"))\n"
                        .utf8))
            throw ExitCode.failure
        }
        let hub: LocalHub
        let ports: LocalHub.Ports
        do {
            hub = try LocalHub(configuration: configuration, logger: logger)
            ports = try await hub.start()
        } catch {
            FileHandle.standardError.write(Data("iothub-localhub: \(error)\n".utf8))
            throw ExitCode.failure
        }
        if readyJSON {
            var connectionStrings: [String: String] = [:]
            for device in devices {
                connectionStrings[device] = try hub.deviceConnectionString(deviceId: device)
            }
            let readiness = LocalHubLaunch.Readiness(
                mqttPort: ports.mqtt, httpsPort: ports.https, blobPort: ports.blob,
                caCertificatePEM: hub.caCertificatePEM, deviceConnectionStrings: connectionStrings)
            FileHandle.standardOutput.write(try JSONEncoder().encode(readiness) + Data("\n".utf8))
        } else {
            var lines = [
                "LocalHub for \(hostName)",
                "  MQTT over TLS:   \(bindAddress):\(ports.mqtt)",
                "  HTTPS:           \(bindAddress):\(ports.https)  (service API, file upload, /local, MQTT over WebSockets)",
                "  Blob storage:    \(bindAddress):\(ports.blob)",
                "  CA certificate:  \(dataDirectory)/ca.pem",
                "  Service connection string: \(dataDirectory)/service-connection-string",
                "  DPS ID scope:    \(hub.idScope)  (provisioning host \(hostName), same MQTT and HTTPS ports; also in \(dataDirectory)/dps-id-scope)",
                "  Provisioning service connection string: \(dataDirectory)/provisioning-service-connection-string",
            ]
            if let edgeDevice, let edgeWorkloadSocket {
                lines.append(
                    "  IoT Edge device \(edgeDevice): workload API on \(edgeWorkloadSocket); a module's IOTEDGE_* variables: GET /local/edge-environment?moduleId=…"
                )
            }
            for device in devices {
                lines.append("  Device \(device): \(try hub.deviceConnectionString(deviceId: device))")
            }
            lines.append("ready")
            FileHandle.standardOutput.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        }
        if exitWithParent {
            // As abrupt as the parent's end may have been (state files are written atomically).
            Thread.detachNewThread {
                var byte: UInt8 = 0
                while true {
                    let count = read(0, &byte, 1)
                    if count > 0 || (count < 0 && errno == EINTR) { continue }
                    _exit(0)
                }
            }
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: hub)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
    }
}
