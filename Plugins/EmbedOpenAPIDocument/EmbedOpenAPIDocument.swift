import PackagePlugin

/// Compiles the Sidecar module's OpenAPI document (`Resources/sidecar.yaml`, the file
/// `openapi/sidecar.yaml` links to) into the module as a string constant, so the binary serves
/// it with nothing installed beside it and without a SwiftPM resource bundle, whose generated
/// accessor would import Foundation (and with it ICU's data) into the module: docs/ARCHITECTURE.md.
@main
struct EmbedOpenAPIDocument: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let document = target.directoryURL.appending(path: "Resources/sidecar.yaml")
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedOpenAPIDocument.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(document.lastPathComponent) in \(target.name)",
                executable: try context.tool(named: "embed-text").url,
                arguments: [document.path(), output.path(), "EmbeddedOpenAPIDocument"],
                inputFiles: [document],
                outputFiles: [output]
            )
        ]
    }
}
