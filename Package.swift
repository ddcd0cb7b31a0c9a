// swift-tools-version: 6.2
import PackageDescription

/// Settings every Swift target shares: Swift 6 language mode (strict concurrency is part of it),
/// the upcoming features we already want to hold ourselves to, and no warnings: a warning in
/// the project's own code fails its build (dependencies' warnings are theirs).
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .treatAllWarnings(as: .error),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    // Nonisolated async functions run on their caller's executor (SE-0461): no hop at each
    // call, which under the HTTP handlers' task executor preference meant a locked lookup.
    .enableUpcomingFeature("NonisolatedNonsendingByDefault"),
]

// Linux only: the code uses Glibc and Linux socket options (TCP_CORK), and its C
// libraries come from Debian packages. Say so at once rather than fail deep in a build.
#if !os(Linux)
    #error("iothub-sidecar builds and runs on Linux only (Glibc, TCP_CORK, Debian's libmosquitto, libcurl and OpenSSL)")
#endif

let package = Package(
    name: "iothub-sidecar",
    products: [
        .library(name: "IoTHubProtocol", targets: ["IoTHubProtocol"]),
        .library(name: "LocalHub", targets: ["LocalHub"]),
        .library(name: "IoTHubDevice", targets: ["IoTHubDevice"]),
        .library(name: "DurableLog", targets: ["DurableLog"]),
        .executable(name: "iothub-sidecar", targets: ["iothub-sidecar"]),
        .executable(name: "iothub-localhub", targets: ["iothub-localhub"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // No default traits: `FullFoundation` would link Foundation's DateFormatter, and with it
        // CoreFoundation and 34 MB of ICU data, into the sidecar (docs/PERFORMANCE.md, "Footprint");
        // `ConfigurationSupport` is swift-configuration, which nothing here uses.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
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
        // glibc's allocator controls (mallopt), for the command-line tool's memory policy.
        .systemLibrary(name: "CMalloc"),

        // MARK: Concurrency building blocks every module shares: signals, replies by key, timeouts.
        .target(
            name: "AsyncPrimitives",
            dependencies: [.product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),

        // MARK: Durable storage: an append-only log of checksummed frames with group commit.
        .target(
            name: "DurableLog",
            dependencies: ["AsyncPrimitives", .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),

        // MARK: Pure IoT Hub protocol: no transport, no NIO.
        .target(
            name: "IoTHubProtocol",
            dependencies: ["COpenSSL"],
            swiftSettings: swiftSettings
        ),

        // MARK: The device client.
        .target(
            name: "IoTHubDevice",
            dependencies: [
                "AsyncPrimitives", "DurableLog", "IoTHubProtocol", "CMosquitto", "CCurl", "COpenSSL",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                // The tunnel for MQTT over WebSockets and through proxies.
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: The local IoT Hub (emulator).
        .target(
            name: "LocalHub",
            dependencies: [
                "AsyncPrimitives",
                "IoTHubProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: The sidecar: the REST API over the device client (Hummingbird), its queues and errors.
        .target(
            name: "Sidecar",
            dependencies: [
                "AsyncPrimitives",
                "DurableLog",
                "IoTHubProtocol",
                "IoTHubDevice",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                // The HTTP/1 connection handlers (SidecarHTTP1Channel.swift).
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                // A listening socket inherited from systemd (InheritedSocketServer.swift).
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // The OpenAPI document is compiled in (as a string) by the plugin below, not shipped
            // as a resource bundle beside the binary.
            exclude: ["Resources/sidecar.yaml"],
            swiftSettings: swiftSettings,
            plugins: ["EmbedOpenAPIDocument"]
        ),
        .plugin(name: "EmbedOpenAPIDocument", capability: .buildTool(), dependencies: ["embed-text"]),
        // The plugin's tool: a text file as a Swift string constant (built for the build machine).
        .executableTarget(name: "embed-text", swiftSettings: swiftSettings),

        // MARK: The command-line tools: the sidecar, and the local hub as a program of its own
        // (so the sidecar users deploy carries none of LocalHub), with what both need.
        .target(
            name: "CommandLineSupport",
            dependencies: [.product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "iothub-localhub",
            dependencies: [
                "CommandLineSupport",
                "LocalHub",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "iothub-sidecar",
            dependencies: [
                "CMalloc",
                "CommandLineSupport",
                "IoTHubProtocol",
                "IoTHubDevice",
                "Sidecar",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Tests
        .testTarget(
            name: "DurableLogTests",
            dependencies: ["DurableLog"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "AsyncPrimitivesTests",
            dependencies: ["AsyncPrimitives"],
            swiftSettings: swiftSettings
        ),
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
            name: "LocalHubTests",
            dependencies: [
                "LocalHub",
                "IoTHubProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "IoTHubDeviceTests",
            dependencies: [
                "IoTHubDevice",
                "LocalHub",
                "IoTHubProtocol",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SidecarTests",
            dependencies: [
                "Sidecar", "IoTHubProtocol", "IoTHubDevice", "LocalHub",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                // The HTTP layer in process, against a real LocalHub.
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
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
