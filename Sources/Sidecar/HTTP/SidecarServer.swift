public import FoundationEssentials
import Glibc
import HTTPTypes
public import Hummingbird
import HummingbirdCore
public import Logging
import NIOCore
public import ServiceLifecycle

/// How the HTTP side of the sidecar runs.
public struct SidecarServerConfiguration: Sendable {
    public var listen: ListenAddress
    /// When set, every request except `/healthz` and `/readyz` needs `Authorization: Bearer <token>`.
    public var apiToken: String?
    /// Connections idle this long are closed; long-polls stay below it.
    public var idleTimeout: Duration
    /// A request whose body stops arriving for this long while the server waits for it is
    /// answered 408 and its connection closed. Only useful below ``idleTimeout``, which ends a
    /// request making no progress too, silently.
    public var requestBodyTimeout: Duration
    /// A listening socket the process inherited (systemd socket activation), served instead of
    /// binding ``listen``, which then only describes it.
    public var inheritedDescriptor: CInt?
    /// The permission bits a unix socket the sidecar binds gets (`--listen-mode`), e.g. `0o660`.
    public var unixSocketMode: UInt32?
    /// The group a unix socket the sidecar binds is given (`--listen-group`).
    public var unixSocketGroup: UInt32?

    public init(
        listen: ListenAddress = .tcp(host: "127.0.0.1", port: 8080), apiToken: String? = nil,
        idleTimeout: Duration = .seconds(60),
        requestBodyTimeout: Duration = .seconds(30), inheritedDescriptor: CInt? = nil, unixSocketMode: UInt32? = nil,
        unixSocketGroup: UInt32? = nil
    ) {
        self.listen = listen
        self.apiToken = apiToken
        self.idleTimeout = idleTimeout
        self.requestBodyTimeout = requestBodyTimeout
        self.inheritedDescriptor = inheritedDescriptor
        self.unixSocketMode = unixSocketMode
        self.unixSocketGroup = unixSocketGroup
    }
}

/// The sidecar's HTTP application: the routes of ``SidecarRoutes`` behind the metrics, problem
/// and token middleware.
public enum SidecarServer {
    /// The OpenAPI document (`openapi/sidecar.yaml`), compiled into the binary by the
    /// EmbedOpenAPIDocument build plugin: served exactly as the file is, with nothing to install
    /// beside the executable.
    public static func openAPIDocument() -> Data {
        EmbeddedOpenAPIDocument.text.withUTF8Buffer { Data($0) }
    }

    /// The router: every area's routes behind the middleware. The routes are recorded as they
    /// are added, and the problem middleware answers 405 with their `Allow` from that record.
    static func makeRouter(bridge: DeviceBridge, apiToken: String?, logger: Logger) -> Router<BasicRequestContext> {
        let routes = RouteRecorder<BasicRequestContext>()
        SidecarRoutes(bridge: bridge, openAPIDocument: openAPIDocument()).addRoutes(to: routes)
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: RequestMetricsMiddleware(metrics: bridge.metrics, logger: logger))
        router.add(
            middleware: ProblemMiddleware(
                routes: routes.table, retryAfterSeconds: bridge.retryAfterSeconds, logger: logger))
        if let apiToken {
            router.add(middleware: APITokenMiddleware(token: apiToken))
        }
        router.addRoutes(routes.collection)
        return router
    }

    /// The HTTP server as a service to run (with the bridge) in a `ServiceGroup`: on the
    /// inherited socket when there is one, else Hummingbird's application bound to ``SidecarServerConfiguration/listen``.
    /// - Parameter onRunning: called with the address once the server listens.
    public static func service(
        bridge: DeviceBridge, configuration: SidecarServerConfiguration, logger: Logger,
        onRunning: @escaping @Sendable (String) async -> Void = { _ in }
    ) -> any Service {
        if let descriptor = configuration.inheritedDescriptor {
            return InheritedSocketServer(
                descriptor: descriptor,
                responder: makeRouter(bridge: bridge, apiToken: configuration.apiToken, logger: logger)
                    .buildResponder(),
                configuration: configuration, logger: logger, onRunning: onRunning)
        }
        return application(bridge: bridge, configuration: configuration, logger: logger, onRunning: onRunning)
    }

    /// Builds the application; run it (with the bridge) in a `ServiceGroup`.
    /// - Parameter onRunning: called with the bound address once the server listens.
    public static func application(
        bridge: DeviceBridge, configuration: SidecarServerConfiguration, logger: Logger,
        onRunning: @escaping @Sendable (String) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let router = makeRouter(bridge: bridge, apiToken: configuration.apiToken, logger: logger)
        let http1 = HTTP1Channel.Configuration(idleTimeout: .seconds(configuration.idleTimeout.components.seconds))
        let requestBodyTimeout = configuration.requestBodyTimeout
        let listen = configuration.listen
        return Application(
            router: router,
            server: HTTPServerBuilder { responder in
                SidecarHTTP1Channel(
                    http1: HTTP1Channel(responder: responder, configuration: http1),
                    requestBodyTimeout: requestBodyTimeout, logger: logger)
            },
            configuration: ApplicationConfiguration(address: listen.bindAddress, serverName: nil, reuseAddress: true),
            onServerRunning: { channel in
                do {
                    try await AcceptFailureBackoffHandler.install(on: channel, logger: logger)
                } catch {
                    logger.warning(
                        "could not guard the listener against running out of file descriptors",
                        metadata: ["error": "\(error)"])
                }
                let bound: String
                switch listen {
                case .unix(let path):
                    if let group = configuration.unixSocketGroup, chown(path, uid_t.max, group) != 0 {
                        logger.error(
                            "cannot give the socket \(path) to group \(group): \(String(cString: strerror(errno)))")
                    }
                    if let mode = configuration.unixSocketMode, chmod(path, mode_t(mode)) != 0 {
                        logger.error(
                            "cannot set the mode of the socket \(path) to \(String(mode, radix: 8)): \(String(cString: strerror(errno)))"
                        )
                    }
                    bound = listen.description
                case .tcp(let host, _):
                    bound = ListenAddress.tcp(host: host, port: channel.localAddress?.port ?? 0).description
                }
                await onRunning(bound)
            },
            logger: logger)
    }
}
