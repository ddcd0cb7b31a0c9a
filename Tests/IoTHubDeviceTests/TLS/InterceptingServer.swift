import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// A server that pretends to be the hub (or, as an HTTP proxy, answers `CONNECT` and then
/// pretends to be the hub behind it) with a certificate of the test's choosing, and counts the
/// application bytes it decrypts: a client that refuses its certificate must send none.
final class InterceptingServer: Sendable {
    private let channel: any Channel
    private let decrypted: NIOLockedValueBox<Int>
    private let connections: NIOLockedValueBox<Int>
    let host: String
    let port: Int

    /// Application bytes received after the TLS handshake, over all connections.
    var applicationBytes: Int { decrypted.withLockedValue { $0 } }
    /// Connections accepted.
    var connectionCount: Int { connections.withLockedValue { $0 } }

    private init(
        channel: any Channel, host: String, decrypted: NIOLockedValueBox<Int>, connections: NIOLockedValueBox<Int>
    ) {
        self.channel = channel
        self.host = host
        self.port = channel.localAddress?.port ?? 0
        self.decrypted = decrypted
        self.connections = connections
    }

    /// Listens on `host` (any loopback address, e.g. 127.0.0.2 for a proxy that is not the
    /// hub) on a free port.
    static func start(host: String = "127.0.0.1", identity: TestServerIdentity, actingAsHTTPProxy: Bool = false)
        async throws -> InterceptingServer
    {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(identity.certificatePEM.utf8)).map {
                .certificate($0)
            },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(identity.privateKeyPEM.utf8), format: .pem)))
        configuration.minimumTLSVersion = .tlsv12
        let context = try NIOSSLContext(configuration: configuration)
        let decrypted = NIOLockedValueBox(0)
        let connections = NIOLockedValueBox(0)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    connections.withLockedValue { $0 += 1 }
                    let counter = ByteCounter(total: decrypted)
                    if actingAsHTTPProxy {
                        try child.pipeline.syncOperations.addHandler(ProxyConnectResponder(tls: context))
                    } else {
                        try child.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    }
                    try child.pipeline.syncOperations.addHandler(counter)
                }
            }
            .bind(host: host, port: 0).get()
        return InterceptingServer(channel: channel, host: host, decrypted: decrypted, connections: connections)
    }

    func stop() async {
        try? await channel.close()
    }
}

/// Counts the bytes that reach it.
private final class ByteCounter: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    private let total: NIOLockedValueBox<Int>

    init(total: NIOLockedValueBox<Int>) {
        self.total = total
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let count = unwrapInboundIn(data).readableBytes
        total.withLockedValue { $0 += count }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Reads an HTTP `CONNECT` request, answers 200, and then speaks TLS itself instead of relaying.
private final class ProxyConnectResponder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let tls: NIOSSLContext
    private var request: [UInt8] = []

    init(tls: NIOSSLContext) {
        self.tls = tls
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        request += Array(buffer: unwrapInboundIn(data))
        guard let end = request.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
        let leftover = Array(request[end.upperBound...])
        context.writeAndFlush(
            wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 200 Connection established\r\n\r\n")), promise: nil)
        do {
            try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls), position: .after(self))
        } catch {
            context.close(promise: nil)
            return
        }
        if !leftover.isEmpty { context.fireChannelRead(wrapInboundOut(ByteBuffer(bytes: leftover))) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

extension ProxyConnectResponder {
    typealias InboundOut = ByteBuffer
}
