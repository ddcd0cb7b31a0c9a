// swift-tools-version: 6.1
import PackageDescription

/// Settings every Swift target shares: Swift 6 language mode (strict concurrency is part of it)
/// and the upcoming features we already want to hold ourselves to.
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "iothub-sidecar",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "IoTHubProtocol", targets: ["IoTHubProtocol"]),
        .executable(name: "iothub-sidecar", targets: ["iothub-sidecar"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
    ],
    targets: [
        // MARK: C libraries from Debian packages (pkg-config names, apt providers).
        .systemLibrary(
            name: "CMosquitto",
            pkgConfig: "libmosquitto",
            providers: [.apt(["libmosquitto-dev"])]
        ),
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev", "libnghttp2-dev"])]
        ),
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),

        // MARK: Pure IoT Hub protocol: no transport, no NIO.
        .target(
            name: "IoTHubProtocol",
            dependencies: ["COpenSSL"],
            swiftSettings: swiftSettings
        ),

        // MARK: The command-line tool.
        .executableTarget(
            name: "iothub-sidecar",
            dependencies: [
                "IoTHubProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Tests
        .testTarget(
            name: "IoTHubProtocolTests",
            dependencies: [
                "IoTHubProtocol",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CLibrariesTests",
            dependencies: ["CMosquitto", "CCurl", "COpenSSL"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SidecarCLITests",
            dependencies: ["IoTHubProtocol"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
    ]
)
