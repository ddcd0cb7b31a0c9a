// swift-tools-version: 6.1
// The measurement behind the choice of the outbox's store (docs/PERFORMANCE.md, "Store"):
// DurableLog against SQLite (Debian's libsqlite3, WAL, synchronous=FULL) on the same disk, in
// the same run. Not part of the product or its tests: `swift run -c release --package-path bench/store`.
import Foundation
import PackageDescription

/// SwiftPM names a path dependency after its directory: whatever the clone is called.
let root = URL(fileURLWithPath: Context.packageDirectory).deletingLastPathComponent().deletingLastPathComponent()
    .lastPathComponent

let package = Package(
    name: "store-bench",
    dependencies: [.package(path: "../..")],
    targets: [
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .executableTarget(
            name: "store-bench",
            dependencies: ["CSQLite", .product(name: "DurableLog", package: root)],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
