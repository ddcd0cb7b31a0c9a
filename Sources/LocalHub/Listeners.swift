import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

#if canImport(Glibc)
    import Glibc
#endif

/// Opens LocalHub's listeners: MQTT over TLS, HTTPS (service API, file upload, `/local`, and
/// MQTT over WebSockets at `/$iothub/websocket`), and the blob endpoint.
enum Listeners {
    /// The largest MQTT packet accepted: a full 256 KB message plus a generous topic.
    static let maximumMQTTPacketSize = 262_144 + 65_536
    /// The largest HTTP request body accepted (blob uploads included).
    static let maximumHTTPBodySize = 64 << 20
    static let webSocketPath = "/$iothub/websocket"
    /// An HTTP connection that sends nothing this long, with no request being answered, is closed.
    static let httpIdleTimeout: TimeAmount = .seconds(120)

    static func tlsContext(_ authority: CertificateAuthority) throws(LocalHubError) -> NIOSSLContext {
        do {
            let chain = try NIOSSLCertificate.fromPEMBytes(Array(authority.serverCertificatePEM.utf8))
            let key = try NIOSSLPrivateKey(bytes: Array(authority.serverPrivateKeyPEM.utf8), format: .pem)
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
            configuration.minimumTLSVersion = .tlsv12
            // Devices with X.509 identities present a client certificate; SAS devices do not.
            // Which certificate is acceptable is the registry's decision (thumbprint or CA
            // common name), made at CONNECT, so the handshake takes any.
            configuration.certificateVerification = .optionalVerification
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw .configuration("cannot load the hub's TLS certificate: \(error)")
        }
    }

    private static func tlsHandler(_ context: NIOSSLContext) -> NIOSSLServerHandler {
        NIOSSLServerHandler(
            context: context,
            customVerificationCallback: { _, promise in
                promise.succeed(.certificateVerified)
            })
    }

    /// Adds the MQTT codec and the connection handler to a pipeline.
    static func addMQTTHandlers(
        to pipeline: ChannelPipeline.SynchronousOperations, hub: Hub, transport: MQTTTransport, logger: Logger
    ) throws {
        try pipeline.addHandler(
            ByteToMessageHandler(MQTTPacketDecoder(maximumPacketSize: maximumMQTTPacketSize, requireConnectFirst: true))
        )
        try pipeline.addHandler(MessageToByteHandler(MQTTPacketEncoder()))
        try pipeline.addHandler(MQTTConnectionHandler(hub: hub, transport: transport, logger: logger))
    }

    /// Binds a TCP listener. `TCP_NODELAY` is set at the TCP level (`tcpOption`): NIO's
    /// `socketOption(.tcp_nodelay)` sets that number at the socket level, `SO_DEBUG` on Linux.
    static func bind(
        host: String, port: Int, group: any EventLoopGroup, name: String,
        initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) async throws(LocalHubError) -> any Channel {
        do {
            return try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelOption(.maxMessagesPerRead, value: 16)
                .childChannelInitializer(initializer)
                .bind(host: host, port: port)
                .get()
        } catch {
            // NIO's IOError names its own functions (bind(descriptor:ptr:bytes:)): say what happened.
            let reason =
                (error as? IOError).map {
                    $0.errnoCode == EADDRINUSE ? "the port is in use" : String(cString: strerror($0.errnoCode))
                } ?? "\(error)"
            throw .listen("cannot listen for \(name) on \(host):\(port): \(reason)")
        }
    }

    static func mqtt(host: String, port: Int, group: any EventLoopGroup, tls: NIOSSLContext, hub: Hub, logger: Logger)
        async throws(LocalHubError) -> any Channel
    {
        try await bind(host: host, port: port, group: group, name: "MQTT") { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(tlsHandler(tls))
                try addMQTTHandlers(to: channel.pipeline.syncOperations, hub: hub, transport: .tcp, logger: logger)
            }
        }
    }

    static func https(
        host: String, port: Int, group: any EventLoopGroup, tls: NIOSSLContext, router: Router, hub: Hub, logger: Logger
    ) async throws(LocalHubError) -> any Channel {
        try await bind(host: host, port: port, group: group, name: "HTTPS") { channel in
            channel.eventLoop.makeCompletedFuture {
                let httpHandler = HTTPServerHandler(router: router, maximumBodySize: maximumHTTPBodySize)
                let upgrader = NIOWebSocketServerUpgrader(
                    maxFrameSize: 1 << 20,
                    shouldUpgrade: { channel, head in
                        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
                        guard path == webSocketPath else { return channel.eventLoop.makeSucceededFuture(nil) }
                        var headers = HTTPHeaders()
                        let offered = head.headers[canonicalForm: "Sec-WebSocket-Protocol"].map { $0.lowercased() }
                        if offered.contains("mqtt") { headers.add(name: "Sec-WebSocket-Protocol", value: "mqtt") }
                        return channel.eventLoop.makeSucceededFuture(headers)
                    },
                    upgradePipelineHandler: { channel, _ in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(WebSocketMQTTAdapter())
                            try addMQTTHandlers(
                                to: channel.pipeline.syncOperations, hub: hub, transport: .webSocket, logger: logger)
                        }
                    })
                let idleHandler = IdleStateHandler(readTimeout: httpIdleTimeout)
                let boundHandlers = NIOLoopBound((httpHandler, idleHandler), eventLoop: channel.eventLoop)
                try channel.pipeline.syncOperations.addHandler(tlsHandler(tls))
                try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                    withServerUpgrade: (
                        upgraders: [upgrader],
                        completionHandler: { context in
                            // After the upgrade the connection speaks MQTT, whose keep-alive rules apply.
                            context.pipeline.syncOperations.removeHandler(boundHandlers.value.0, promise: nil)
                            context.pipeline.syncOperations.removeHandler(boundHandlers.value.1, promise: nil)
                        }
                    ))
                try channel.pipeline.syncOperations.addHandler(idleHandler)
                try channel.pipeline.syncOperations.addHandler(httpHandler)
            }
        }
    }

    /// Plain HTTP on a unix socket (the IoT Edge workload API); a stale socket file is replaced.
    static func unixHTTP(path: String, group: any EventLoopGroup, router: Router, name: String)
        async throws(LocalHubError) -> any Channel
    {
        do {
            return try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 64)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: httpIdleTimeout))
                        try channel.pipeline.syncOperations.addHandler(
                            HTTPServerHandler(router: router, maximumBodySize: 1 << 20))
                    }
                }
                .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true)
                .get()
        } catch {
            throw .listen("cannot listen for \(name) on \(path): \(error)")
        }
    }

    static func blob(host: String, port: Int, group: any EventLoopGroup, tls: NIOSSLContext, router: Router)
        async throws(LocalHubError) -> any Channel
    {
        try await bind(host: host, port: port, group: group, name: "blob storage") { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(tlsHandler(tls))
                try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: httpIdleTimeout))
                try channel.pipeline.syncOperations.addHandler(
                    HTTPServerHandler(router: router, maximumBodySize: maximumHTTPBodySize))
            }
        }
    }
}
