import Foundation
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1

/// Hummingbird's HTTP/1.1 connection with handlers of the sidecar between NIO's HTTP/1 parser
/// and Hummingbird's conversion to `HTTPTypes`, where the HTTP version and the raw framing are
/// still visible:
///
/// 1. ``HTTP1PersistenceHandler``: HTTP/1.0 answers and `Connection: close`.
/// 2. ``MalformedRequestHandler``: a request that cannot be parsed gets a problem document.
struct SidecarHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value

    let http1: HTTP1Channel

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        http1.setup(channel: channel, logger: logger).flatMapThrowing { value in
            // Hummingbird's setup completes on the channel's event loop, so does this.
            let pipeline = channel.pipeline.syncOperations
            var previous: any ChannelHandler = try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            let handlers: [any ChannelHandler] = [HTTP1PersistenceHandler(), MalformedRequestHandler()]
            for handler in handlers {
                try pipeline.addHandler(handler, position: .after(previous))
                previous = handler
            }
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await http1.handle(value: value, logger: logger)
    }
}

/// Keeps a connection open after an answer only when HTTP/1 says it persists (RFC 9112 §9.3),
/// which Hummingbird, whose requests carry no HTTP version, cannot tell:
///
/// * An HTTP/1.0 request is answered as HTTP/1.0, so that a body of unknown length is delimited
///   by closing the connection rather than sent in chunks the client does not know, and the
///   connection closes after the answer unless the request said `Connection: keep-alive`.
/// * A request whose `Connection` header lists `close` (in any case) is answered, then closed.
/// * An answer that says `Connection: close` (long-polls, a request that left the connection
///   unusable) closes the connection once it is written.
///
/// A closing answer says `Connection: close`; a persistent answer to HTTP/1.0 says
/// `Connection: keep-alive`.
final class HTTP1PersistenceHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private struct Request {
        var version: HTTPVersion
        var isKeepAlive: Bool
    }

    /// Requests read whose answer has not started, oldest first.
    private var unanswered = CircularBuffer<Request>()
    /// The answer being written ends the connection.
    private var closesAfterAnswer = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            unanswered.append(Request(version: head.version, isKeepAlive: head.isKeepAlive))
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head) where head.status.code >= 200:
            // A parse error is answered before any request was read: it is HTTP/1.1 and closes.
            let request = unanswered.popFirst() ?? Request(version: .http1_1, isKeepAlive: true)
            var persists = request.isKeepAlive && head.isKeepAlive
            if request.version == .http1_0 {
                head.version = .http1_0
                let mayHaveBody = head.status != .noContent && head.status != .notModified
                if mayHaveBody, !head.headers.contains(name: "content-length") { persists = false }
            }
            head.headers.remove(name: "connection")
            if !persists {
                head.headers.add(name: "connection", value: "close")
            } else if head.version == .http1_0 {
                head.headers.add(name: "connection", value: "keep-alive")
            }
            closesAfterAnswer = !persists
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .end where closesAfterAnswer:
            closesAfterAnswer = false
            let written = promise ?? context.eventLoop.makePromise()
            context.write(data, promise: written)
            written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        default:
            context.write(data, promise: promise)
        }
    }
}

/// Answers a request whose request line or header section cannot be parsed (an unknown
/// transfer coding, two different lengths, a length and chunks, a folded header line, …) with a
/// `ValueError` problem document (400) and closes the connection, instead of Hummingbird's
/// empty 400. A body whose framing breaks while a handler reads it fails that read instead:
/// the error goes on to the handler (``ProblemMiddleware`` answers it the same way).
///
/// The framings that request smuggling relies on are all refused by NIO's parser; after it
/// refuses, nothing more is read from the connection.
final class MalformedRequestHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Requests read whose answer is not fully written.
    private var unanswered = 0
    /// A request's head was read, its end not yet.
    private var isReadingRequest = false
    /// The connection's last answer, to a request that could not be parsed, is written.
    private var hasAnswered = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !hasAnswered else { return }
        switch unwrapInboundIn(data) {
        case .head:
            unanswered += 1
            isReadingRequest = true
        case .body:
            break
        case .end:
            isReadingRequest = false
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { unanswered = max(0, unanswered - 1) }
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if hasAnswered { return }
        // With a request under way, its handler or Hummingbird gets the error.
        guard unanswered == 0, !isReadingRequest, let parseError = Self.parseError(error) else {
            context.fireErrorCaught(error)
            return
        }
        hasAnswered = true
        let body = ProblemDetails.malformedRequest("\(parseError)").encoded()
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/problem+json")
        headers.add(name: "content-length", value: String(body.count))
        headers.add(name: "connection", value: "close")
        // Through the handlers in front of this one: the persistence handler closes after it.
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .badRequest, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    /// The parser's error, also when the decoder reports it wrapped.
    static func parseError(_ error: any Error) -> HTTPParserError? {
        switch error {
        case let error as HTTPParserError: error
        case let error as ByteToMessageDecoderError:
            if case .dataReceivedInErrorState(let underlying as HTTPParserError, _) = error { underlying } else { nil }
        default: nil
        }
    }
}
