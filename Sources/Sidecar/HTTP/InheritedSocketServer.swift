import FoundationEssentials
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The sidecar's HTTP server on a listening socket it was given rather than one it binds:
/// systemd socket activation (`LISTEN_FDS`, see `deploy/iothub-sidecar.socket`), where the
/// socket's owner, group and mode are systemd's and survive restarts of the sidecar.
///
/// Hummingbird's server binds its own address, so this service runs the same connection
/// handling (``SidecarHTTP1Channel`` over Hummingbird's `HTTP1Channel`, the same router) on
/// NIO's `ServerBootstrap.bind(_:)` of the descriptor. On graceful shutdown it stops accepting,
/// tells every open connection to finish its request and close (`ChannelShouldQuiesceEvent`,
/// which NIO's HTTP/1 pipeline handler understands), and waits for them.
struct InheritedSocketServer: Service {
    let descriptor: CInt
    let responder: RouterResponder<BasicRequestContext>
    let configuration: SidecarServerConfiguration
    let logger: Logger
    let onRunning: @Sendable (String) async -> Void

    func run() async throws {
        let responder = self.responder
        let logger = self.logger
        let http1 = HTTP1Channel(
            responder: { request, responseWriter, channel in
                let context = BasicRequestContext(source: .init(channel: channel, logger: logger))
                var response: Response
                do {
                    response = try await responder.respond(to: request, context: context)
                } catch let error as HTTPParserError {
                    throw error
                } catch {
                    // The problem middleware answers every error the routes throw; this is a
                    // last resort, as in Hummingbird's own application.
                    response = Response(status: .internalServerError)
                }
                response.headers[.date] = Self.httpDate()
                try await responseWriter.write(response: response.head, body: response.body)
            },
            configuration: HTTP1Channel.Configuration(
                idleTimeout: .seconds(configuration.idleTimeout.components.seconds)))
        let child = SidecarHTTP1Channel(
            http1: http1, requestBodyTimeout: configuration.requestBodyTimeout, logger: logger)
        let connections = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])
        let server: NIOAsyncChannel<SidecarHTTP1Channel.Value, Never> = try await ServerBootstrap(
            group: MultiThreadedEventLoopGroup.singleton
        )
        .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
        .bind(NIOBSDSocket.Handle(descriptor)) { (channel: any Channel) -> EventLoopFuture<SidecarHTTP1Channel.Value> in
            let key = ObjectIdentifier(channel)
            connections.withLockedValue { $0[key] = channel }
            channel.closeFuture.whenComplete { _ in _ = connections.withLockedValue { $0.removeValue(forKey: key) } }
            return child.setup(channel: channel, logger: logger)
        }
        do {
            try await AcceptFailureBackoffHandler.install(on: server.channel, logger: logger)
        } catch {
            logger.warning(
                "could not guard the listener against running out of file descriptors", metadata: ["error": "\(error)"])
        }
        await onRunning(configuration.listen.description)
        try await withGracefulShutdownHandler {
            try await server.executeThenClose { inbound in
                await withDiscardingTaskGroup { group in
                    do {
                        for try await connection in inbound {
                            group.addTask { await child.handle(value: connection, logger: logger) }
                        }
                    } catch {
                        logger.debug("the inherited listener ended", metadata: ["error": "\(error)"])
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil as EventLoopPromise<Void>?)
            for channel in connections.withLockedValue({ Array($0.values) }) {
                channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
            }
        }
    }

    /// `Date` for an answer (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
    static func httpDate() -> String {
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        var buffer = [Int8](repeating: 0, count: 40)
        let length = strftime(&buffer, buffer.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
