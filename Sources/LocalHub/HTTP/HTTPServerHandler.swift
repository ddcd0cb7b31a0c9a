import NIOCore
import NIOHTTP1
import NIOSSL

/// Reads whole HTTP/1.1 requests, answers them through a ``Router`` on a task, and writes the
/// response back on the event loop. Streaming responses (server-sent events) are written chunk
/// by chunk until the stream ends or the client goes away, which cancels the task.
final class HTTPServerHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let router: Router
    private let maximumBodySize: Int
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var bodyTooLarge = false
    private var task: Task<Void, Never>?

    init(router: Router, maximumBodySize: Int) {
        self.router = router
        self.maximumBodySize = maximumBodySize
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = context.channel.allocator.buffer(capacity: 0)
            bodyTooLarge = false
        case .body(var chunk):
            guard !bodyTooLarge else { return }
            if (body?.readableBytes ?? 0) + chunk.readableBytes > maximumBodySize {
                bodyTooLarge = true
                body = nil
            } else {
                body?.writeBuffer(&chunk)
            }
        case .end:
            guard let head else { return }
            self.head = nil
            if bodyTooLarge {
                write(
                    .error(.payloadTooLarge("the request body exceeds \(maximumBodySize) bytes")), for: head,
                    context: context)
                return
            }
            let certificate = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)
                .peerCertificate
            let request = RouterRequest(
                head: head, body: body ?? ByteBuffer(),
                clientCertificateDER: certificate.flatMap { try? $0.toDERBytes() })
            body = nil
            let router = self.router
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let eventLoop = context.eventLoop
            task = Task {
                let response = await router.respond(to: request)
                eventLoop.execute {
                    let (handler, context) = loopBound.value
                    handler.write(response, for: head, context: context)
                }
            }
        }
    }

    /// Closes a connection that sent nothing for the idle timeout, unless a request (a long-poll,
    /// an event stream) is still being answered on it.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            if task == nil { context.close(promise: nil) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        task?.cancel()
        task = nil
        context.fireChannelInactive()
    }

    private func write(_ response: RouterResponse, for request: HTTPRequestHead, context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        var headers = response.headers
        let keepAlive = request.isKeepAlive
        headers.replaceOrAdd(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        headers.replaceOrAdd(name: "Server", value: "iothub-sidecar-localhub")
        switch response.body {
        case .buffer(let buffer):
            headers.replaceOrAdd(name: "Content-Length", value: String(buffer.readableBytes))
            context.write(
                wrapOutboundOut(
                    .head(HTTPResponseHead(version: request.version, status: response.status, headers: headers))),
                promise: nil)
            if buffer.readableBytes > 0, request.method != .HEAD {
                context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            }
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                if !keepAlive { channel.close(promise: nil) }
            }
            task = nil
        case .stream(let stream):
            headers.remove(name: "Content-Length")
            headers.replaceOrAdd(name: "Transfer-Encoding", value: "chunked")
            context.writeAndFlush(
                wrapOutboundOut(
                    .head(HTTPResponseHead(version: request.version, status: response.status, headers: headers))),
                promise: nil)
            let channel = context.channel
            task = Task {
                for await chunk in stream {
                    guard channel.isActive else { break }
                    channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(chunk)), promise: nil)
                }
                channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { _ in
                    if !keepAlive { channel.close(promise: nil) }
                }
            }
        }
    }
}
