import Foundation
import Hummingbird
import IoTHubDevice
import Logging
import Testing

@testable import Sidecar

@Suite struct RouteTableTests {
    /// The routes as the router registers them, from a bridge that never connects.
    static func registeredRoutes() throws -> RouteTable {
        let client = try IoTHubDeviceClient.fromConnectionString(
            "HostName=example.azure-devices.net;DeviceId=d;SharedAccessKey="
                + Data(repeating: 1, count: 32).base64EncodedString(),
            logger: Logger(label: "test"))
        let recorder = RouteRecorder<BasicRequestContext>()
        SidecarRoutes(bridge: try DeviceBridge(client: client, logger: Logger(label: "test")), openAPIDocument: Data())
            .addRoutes(to: recorder)
        return recorder.table
    }

    /// `(method, path)` of every operation in `Sources/Sidecar/Resources/sidecar.yaml`.
    static func documentedOperations() throws -> Set<String> {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "../../../Sources/Sidecar/Resources/sidecar.yaml")
        let text = try String(contentsOf: file, encoding: .utf8)
        var operations = Set<String>()
        var inPaths = false
        var path: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if !line.isEmpty, !line.hasPrefix(" ") { inPaths = line == "paths:" }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), line.hasSuffix(":"), !line.hasPrefix("   ") {
                path = String(line.dropFirst(2).dropLast())
            } else if let path,
                let method = ["get", "post", "put", "patch", "delete"].first(where: { line == "    \($0):" })
            {
                operations.insert("\(method.uppercased()) \(path)")
            }
        }
        return operations
    }

    @Test func theRouterServesWhatTheContractDocumentsAndNothingElse() throws {
        let served = Set(try Self.registeredRoutes().routes.map { "\($0.method.rawValue) \($0.documentedPath)" })
        let documented = try Self.documentedOperations()
        #expect(documented.count > 20)
        #expect(served == documented)
    }

    @Test func allowedMethodsFollowTheRoutes() throws {
        let table = try Self.registeredRoutes()
        #expect(table.allowedMethods(for: "/twin") == "GET, PATCH")
        #expect(table.allowedMethods(for: "/blob/sas") == "POST")
        #expect(table.allowedMethods(for: "/blob/a/b.txt") == "PUT")
        #expect(table.allowedMethods(for: "/blob/") == "PUT")
        #expect(table.allowedMethods(for: "/inbox/t/abandon") == "POST")
        #expect(table.allowedMethods(for: "/inbox/t") == "DELETE")
        #expect(table.allowedMethods(for: "/nowhere") == nil)
        #expect(table.allowedMethods(for: "/blob") == nil)
    }
}
