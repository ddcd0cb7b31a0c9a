import Dispatch
import IoTHubProtocol
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import NIOWebSocket

/// How the MQTT connection reaches the hub when libmosquitto cannot carry it itself: over
/// WebSockets, through a proxy, or both.
struct TunnelPlan: Sendable {
    /// The hub (or gateway) and the port: the MQTT port for MQTT over TCP, the HTTPS port for
    /// WebSockets.
    var host: String
    var port: Int
    var webSocket: Bool
    var proxy: ProxyOptions?
    /// TLS to the hub, with the same trusted CAs, ciphers and client certificate as the direct path.
    var tls: NIOSSLContext
    /// Verifies the hub's certificate chain and name by the client's ``TLSPolicy``, with
    /// OpenSSL, the way the direct path's handshake does (NIOSSL's own check would accept a
    /// certificate naming the connected address, which through a proxy is the proxy's).
    var verifier: TLSContext
    var userAgent: String
    /// Bound on opening the tunnel: TCP, proxy negotiation, TLS and the WebSocket upgrade.
    var timeout: Duration

    /// "wss://hub:443/$iothub/websocket through HTTP proxy p:3128", for errors and logs.
    var description: String {
        let target =
            webSocket
            ? "wss://\(hostAndPort(host, port))\(WebSocketHandshake.path)" : "mqtts://\(hostAndPort(host, port))"
        return proxy.map { "\(target) through the \($0.name)" } ?? target
    }
}

/// One tunnel for one MQTT connection attempt. The hub side is opened first (TCP to the hub or
/// the proxy, proxy negotiation, TLS, WebSocket upgrade), so every failure is reported before
/// libmosquitto is involved; then a unix socket in a private directory accepts exactly one
/// connection, libmosquitto's, and bytes are relayed both ways on one event loop.
///
/// Closing either side closes the other: a hub that drops the connection looks to libmosquitto
/// like a dropped TCP connection, and a libmosquitto disconnect closes the hub connection.
final class MQTTTunnel: Sendable {
    let socketPath: String
    private let hubChannel: any Channel
    private let listener: any Channel

    private init(socketPath: String, hubChannel: any Channel, listener: any Channel) {
        self.socketPath = socketPath
        self.hubChannel = hubChannel
        self.listener = listener
    }

    /// Closes both sides (the socket file goes too).
    func close() {
        listener.close(promise: nil)
        hubChannel.close(promise: nil)
        unlink(socketPath)
    }

    /// The bootstrap of the hub-side TCP connection. `TCP_NODELAY` is a TCP-level option
    /// (`tcpOption`): NIO's `socketOption(.tcp_nodelay)` would set the option with the same
    /// number at the socket level, which on Linux is `SO_DEBUG` (refused without
    /// `CAP_NET_ADMIN`) and leaves Nagle's algorithm on.
    static func hubBootstrap(eventLoop: any EventLoop, timeout: Duration) -> ClientBootstrap {
        ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(timeout))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
    }

    /// Opens the hub side as `plan` says and listens at `socketPath` for libmosquitto.
    static func open(_ plan: TunnelPlan, socketPath: String) async throws(IoTHubError) -> MQTTTunnel {
        let failure: (String) -> IoTHubError = { .connectionFailedError("cannot reach \(plan.description): \($0)") }
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let deadline = NIODeadline.now() + TimeAmount(plan.timeout)
        var resolved: [UInt8]?
        if let proxy = plan.proxy, proxy.kind == .socks4 {
            guard let address = await resolveIPv4(plan.host) else {
                throw failure("SOCKS4 needs an IPv4 address and '\(plan.host)' has none")
            }
            resolved = address
        }
        let socks4Address = resolved
        let (dialHost, dialPort) = plan.proxy.map { ($0.address, $0.port) } ?? (plan.host, plan.port)
        let channel: any Channel
        do {
            channel = try await hubBootstrap(eventLoop: eventLoop, timeout: plan.timeout)
                .connect(host: dialHost, port: dialPort).get()
        } catch {
            let what = plan.proxy.map { "the \($0.name)" } ?? hostAndPort(plan.host, plan.port)
            throw failure("cannot connect to \(what): \(describe(error))")
        }
        let established = eventLoop.flatSubmit {
            let timeout = eventLoop.scheduleTask(deadline: deadline) {
                channel.pipeline.fireErrorCaught(TunnelFailure("no answer within \(plan.timeout)"))
            }
            var steps: EventLoopFuture<[UInt8]> = eventLoop.makeSucceededFuture([])
            if let proxy = plan.proxy {
                steps = steps.flatMap { _ in
                    switch proxy.kind {
                    case .http:
                        return handshake(
                            HTTPConnectHandshake(
                                targetHost: plan.host, targetPort: plan.port, username: proxy.username,
                                password: proxy.password, proxyName: proxy.name), on: channel)
                    case .socks4:
                        return handshake(
                            SOCKS4Handshake(
                                address: socks4Address ?? [], port: plan.port, userId: proxy.username ?? "",
                                proxyName: proxy.name), on: channel)
                    case .socks5:
                        return handshake(
                            SOCKS5Handshake(
                                targetHost: plan.host, targetPort: plan.port, username: proxy.username,
                                password: proxy.password, proxyName: proxy.name), on: channel)
                    }
                }
            }
            steps = steps.flatMap { leftover in
                // The proxy (if any) now relays to the hub: TLS from here on.
                let ready = eventLoop.makePromise(of: [UInt8].self)
                do {
                    let rejection = NIOLockedValueBox<String?>(nil)
                    let verifier = plan.verifier
                    let tls = try NIOSSLClientHandler(
                        context: plan.tls, serverHostname: verifier.policy.peer.serverNameIndication
                    ) { chain, verdict in
                        let reason = verifier.rejectionReason(forServerChain: chain.compactMap { try? $0.toDERBytes() })
                        rejection.withLockedValue { $0 = reason }
                        verdict.succeed(reason == nil ? .certificateVerified : .failed)
                    }
                    try channel.pipeline.syncOperations.addHandler(tls)
                    try channel.pipeline.syncOperations.addHandler(
                        TLSReadyHandler(rejection: rejection, promise: ready))
                    if !leftover.isEmpty { channel.pipeline.fireChannelRead(channel.allocator.buffer(bytes: leftover)) }
                } catch {
                    ready.fail(TunnelFailure("TLS could not start: \(error)"))
                }
                return ready.futureResult
            }
            if plan.webSocket {
                steps = steps.flatMap { _ in
                    handshake(
                        WebSocketHandshake(host: plan.host, port: plan.port, userAgent: plan.userAgent), on: channel)
                }.flatMapThrowing { leftover in
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(WebSocketFrameEncoder())
                    try sync.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 24)))
                    try sync.addHandler(WebSocketByteStream())
                    return leftover
                }
            }
            let ready = steps.flatMapThrowing { leftover in
                let relay = RelayHandler()
                try channel.pipeline.syncOperations.addHandler(relay)
                if !leftover.isEmpty { channel.pipeline.fireChannelRead(channel.allocator.buffer(bytes: leftover)) }
                return NIOLoopBound(relay, eventLoop: eventLoop)
            }
            ready.whenComplete { _ in timeout.cancel() }
            return ready
        }
        let relay: NIOLoopBound<RelayHandler>
        do {
            relay = try await established.get()
        } catch {
            channel.close(promise: nil)
            throw failure(describe(error))
        }

        let accepted = NIOLockedValueBox(false)
        let listener: any Channel
        do {
            listener = try await ServerBootstrap(group: eventLoop)
                .serverChannelOption(.backlog, value: 1)
                .childChannelInitializer { child in
                    child.eventLoop.makeCompletedFuture {
                        // Exactly one connection, libmosquitto's: the socket file goes at once
                        // (the listener itself closes with the hub connection), later ones are
                        // refused.
                        let first = accepted.withLockedValue { accepted in
                            defer { accepted = true }
                            return !accepted
                        }
                        unlink(socketPath)
                        guard first, channel.isActive else { throw TunnelFailure("the tunnel is taken or closed") }
                        let inner = RelayHandler()
                        try child.pipeline.syncOperations.addHandler(inner)
                        inner.joined(by: relay.value)
                        relay.value.joined(by: inner)
                    }
                }
                .bind(unixDomainSocketPath: socketPath, cleanupExistingSocketFile: true).get()
        } catch {
            channel.close(promise: nil)
            throw .clientError("cannot listen on the tunnel's unix socket \(socketPath): \(error)")
        }
        channel.closeFuture.whenComplete { _ in listener.close(promise: nil) }
        return MQTTTunnel(socketPath: socketPath, hubChannel: channel, listener: listener)
    }

    /// Runs one handshake on `channel`; the future holds the bytes received after it.
    private static func handshake<H: TunnelHandshake>(_ handshake: H, on channel: any Channel) -> EventLoopFuture<
        [UInt8]
    > {
        let promise = channel.eventLoop.makePromise(of: [UInt8].self)
        do {
            try channel.pipeline.syncOperations.addHandler(HandshakeHandler(handshake, promise: promise))
        } catch {
            promise.fail(error)
        }
        return promise.futureResult
    }

    private static func describe(_ error: any Error) -> String {
        if let failure = error as? TunnelFailure { return failure.description }
        if let error = error as? NIOSSLError { return "TLS failed: \(error)" }
        if let error = error as? IOError { return error.description }
        if case ChannelError.connectTimeout? = error as? ChannelError { return "no TCP connection within the timeout" }
        return "\(error)"
    }

    /// The first IPv4 address of `host` (a literal is returned as it is). Resolution blocks, so
    /// it runs on a Dispatch thread.
    private static func resolveIPv4(_ host: String) async -> [UInt8]? {
        if let literal = IPAddressLiteral.ipv4(host) { return literal }
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var hints = addrinfo()
                hints.ai_family = AF_INET
                hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
                var result: UnsafeMutablePointer<addrinfo>?
                guard getaddrinfo(host, nil, &hints, &result) == 0, let first = result,
                    let address = first.pointee.ai_addr
                else {
                    continuation.resume(returning: nil)
                    return
                }
                defer { freeaddrinfo(result) }
                let bytes = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
                    withUnsafeBytes(of: pointer.pointee.sin_addr) { Array($0) }
                }
                continuation.resume(returning: bytes)
            }
        }
    }
}

// MARK: - Channel handlers

/// Drives a ``TunnelHandshake`` at the current end of the pipeline and removes itself when done.
private final class HandshakeHandler<Handshake: TunnelHandshake>: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private var handshake: Handshake
    private var received: [UInt8] = []
    private let outcome: HandshakeOutcome

    init(_ handshake: Handshake, promise: EventLoopPromise<[UInt8]>) {
        self.handshake = handshake
        self.outcome = HandshakeOutcome(promise)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bytes = handshake.start()
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(bytes: bytes)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !outcome.isSettled else { return context.fireChannelRead(data) }
        var buffer = unwrapInboundIn(data)
        received += buffer.readBytes(length: buffer.readableBytes) ?? []
        do {
            while true {
                switch try handshake.advance(&received) {
                case .needMoreBytes:
                    return
                case .send(let bytes):
                    context.writeAndFlush(NIOAny(context.channel.allocator.buffer(bytes: bytes)), promise: nil)
                case .finished:
                    let leftover = received
                    received = []
                    context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                    outcome.succeed(leftover)
                    return
                }
            }
        } catch {
            outcome.fail(context: context, error)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        outcome.fail(context: context, TunnelFailure("the connection closed during the handshake"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        outcome.fail(context: context, error)
    }
}

/// Waits for the TLS handshake (or its failure) and removes itself.
private final class TLSReadyHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let outcome: HandshakeOutcome
    /// Why the certificate verification refused the hub's certificate, if it did.
    private let rejection: NIOLockedValueBox<String?>

    init(rejection: NIOLockedValueBox<String?>, promise: EventLoopPromise<[UInt8]>) {
        self.rejection = rejection
        self.outcome = HandshakeOutcome(promise)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent, !outcome.isSettled {
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            outcome.succeed([])
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        outcome.fail(context: context, TunnelFailure("the connection closed during the TLS handshake"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let reason = rejection.withLockedValue({ $0 }) {
            outcome.fail(context: context, TunnelFailure("the hub's TLS certificate was not accepted: \(reason)"))
        } else {
            outcome.fail(context: context, error)
        }
    }
}

/// The one outcome of a handshake step, settled once: by success (with the bytes that came
/// after the handshake), or by the first failure, which also closes the channel. Later
/// failures travel on down the pipeline. Used on the channel's event loop only.
private final class HandshakeOutcome {
    private let promise: EventLoopPromise<[UInt8]>
    private(set) var isSettled = false

    init(_ promise: EventLoopPromise<[UInt8]>) {
        self.promise = promise
    }

    func succeed(_ leftover: [UInt8]) {
        guard !isSettled else { return }
        isSettled = true
        promise.succeed(leftover)
    }

    func fail(context: ChannelHandlerContext, _ error: any Error) {
        guard !isSettled else { return context.fireErrorCaught(error) }
        isSettled = true
        promise.fail(error)
        context.close(promise: nil)
    }
}

/// MQTT bytes as WebSocket binary frames (masked, as a client must) and back; answers pings and
/// the peer's close.
private final class WebSocketByteStream: ChannelDuplexHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = WebSocketFrame

    private var closeSent = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .binary, .continuation:
            context.fireChannelRead(wrapInboundOut(frame.unmaskedData))
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            // Answer the peer's close, then close the connection.
            sendCloseFrame(context: context)
            context.close(promise: nil)
        case .text:
            // MQTT is binary; a text frame means the peer is not speaking MQTT over WebSockets.
            var data = context.channel.allocator.buffer(capacity: 2)
            data.write(webSocketErrorCode: .unacceptableData)
            closeSent = true
            context.writeAndFlush(
                wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: data)),
                promise: nil)
            context.close(promise: nil)
        default:
            break
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let bytes = unwrapOutboundIn(data)
        context.write(
            wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: bytes)),
            promise: promise)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // Our side ends the connection (libmosquitto disconnected): say so in WebSocket terms first.
        if mode == .all, context.channel.isActive { sendCloseFrame(context: context) }
        context.close(mode: mode, promise: promise)
    }

    private func sendCloseFrame(context: ChannelHandlerContext) {
        guard !closeSent else { return }
        closeSent = true
        var data = context.channel.allocator.buffer(capacity: 2)
        data.write(webSocketErrorCode: .normalClosure)
        context.writeAndFlush(
            wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: data)),
            promise: nil)
    }
}

/// One end of the relay between libmosquitto's unix socket and the hub connection. Both ends
/// live on the same event loop, so each calls its partner directly. Reads pause while the
/// partner cannot take more (its channel is not writable) and resume when it can.
private final class RelayHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var partner: RelayHandler?
    private var context: ChannelHandlerContext?
    private var readPending = false
    /// Bytes that arrived before the partner existed (the hub spoke before libmosquitto connected).
    private var early: [ByteBuffer] = []
    private var closedBeforePartner = false

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    /// Called by the partner when it joins: deliver what waited.
    private func flushEarly() {
        guard let partner else { return }
        for buffer in early { partner.writeFromPartner(buffer) }
        if !early.isEmpty { partner.flushFromPartner() }
        early = []
        if closedBeforePartner { partner.closeFromPartner() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        if let partner { partner.writeFromPartner(buffer) } else { early.append(buffer) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.flushFromPartner()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let partner { partner.closeFromPartner() } else { closedBeforePartner = true }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let partner, partner.isWritable == false {
            readPending = true
        } else {
            context.read()
        }
    }

    // MARK: Called by the partner

    var isWritable: Bool { context?.channel.isWritable ?? false }

    func joined(by partner: RelayHandler) {
        self.partner = partner
        flushEarly()
    }

    private func writeFromPartner(_ buffer: ByteBuffer) {
        context?.write(wrapOutboundOut(buffer), promise: nil)
    }

    private func flushFromPartner() {
        context?.flush()
    }

    private func closeFromPartner() {
        // What the partner read last (a CONNACK refusing the credentials, say) goes out first.
        context?.flush()
        context?.close(promise: nil)
    }

    private func partnerBecameWritable() {
        if readPending, let context {
            readPending = false
            context.read()
        }
    }
}
