import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1

/// Hummingbird's HTTP/1.1 connection with one handler of the sidecar,
/// ``SidecarHTTP1Handler``, between NIO's HTTP/1 parser and Hummingbird's conversion to
/// `HTTPTypes`, where the HTTP version, the raw framing and the flow of body bytes are still
/// visible.
struct SidecarHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value

    let http1: HTTP1Channel
    /// How long a request body may pause while the server waits for it.
    let requestBodyTimeout: Duration
    let logger: Logger

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let requestBodyTimeout = self.requestBodyTimeout
        let sidecarLogger = self.logger
        return http1.setup(channel: channel, logger: logger).flatMapThrowing { value in
            // Hummingbird's setup completes on the channel's event loop, so does this.
            let pipeline = channel.pipeline.syncOperations
            let decoder = try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try pipeline.addHandler(
                SidecarHTTP1Handler(requestBodyTimeout: requestBodyTimeout, logger: sidecarLogger),
                position: .after(decoder))
            return value
        }
    }

    /// Handles the connection's requests on the event loop that serves its socket
    /// (``EventLoopTaskExecutor``).
    func handle(value: Value, logger: Logger) async {
        await withTaskExecutorPreference(EventLoopTaskExecutor(value.channel.eventLoop)) {
            await http1.handle(value: value, logger: logger)
        }
    }

    /// Whether ``SidecarHTTP1Handler`` failed a request body through the client's fault: it
    /// stopped arriving, or its framing broke. The request is then answered with that, not with
    /// what it was doing.
    static func isClientFault(_ error: any Error) -> Bool {
        error is RequestBodyTimeout || SidecarHTTP1Handler.parseError(error) != nil
    }
}

/// What the sidecar adds to each HTTP/1 connection, in one handler (every handler in a
/// pipeline costs each request part a hop and a type check; three handlers made a no-op request
/// cost about 7,000 more instructions: docs/PERFORMANCE.md, "Work per request"). Three duties:
///
/// **Persistence.** Keeps a connection open after an answer only when HTTP/1 says it persists
/// (RFC 9112 §9.3), which Hummingbird, whose requests carry no HTTP version, cannot tell:
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
///
/// **Malformed requests.** Answers a request whose request line or header section cannot be
/// parsed (an unknown transfer coding, two different lengths, a length and chunks, a folded
/// header line, …) with a `ValueError` problem document (400) and closes the connection,
/// instead of Hummingbird's empty 400. A body whose framing breaks while a handler reads it
/// fails that read instead: the error goes on to the handler (``ProblemMiddleware`` answers it
/// the same way). The framings that request smuggling relies on are all refused by NIO's
/// parser; after it refuses, nothing more is read from the connection.
///
/// **Request body timeout.** Fails a request whose body stops arriving: when the server has
/// been waiting for more of the body for the timeout without a byte, the request's body fails
/// with ``RequestBodyTimeout`` (its handler answers 408 and closes the connection; an upload
/// being streamed is aborted), and one warning is logged. Only time the server waits counts:
/// while the server does not read (because the handler has not taken what came, e.g. blob
/// storage is slow), the client cannot send, so the clock stands still. A body that keeps
/// coming, however slowly, is not cut off. Waiting for a request head is the business of
/// Hummingbird's idle timeout (60 s), which also ends a connection whose request makes no
/// progress for that long.
final class SidecarHTTP1Handler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    // Persistence.

    private struct RequestFraming {
        var version: HTTPVersion
        var isKeepAlive: Bool
    }

    /// Requests read whose answer has not started, oldest first.
    private var unstartedAnswers = CircularBuffer<RequestFraming>()
    /// The answer being written ends the connection.
    private var closesAfterAnswer = false

    // Malformed requests.

    /// Requests read whose answer is not fully written.
    private var unfinishedAnswers = 0
    /// A request's head was read, its end not yet.
    private var isReadingRequest = false
    /// The connection's last answer, to a request that could not be parsed, is written.
    private var hasAnsweredMalformedRequest = false

    // Request body timeout.

    private let timeout: TimeAmount
    private let timeoutSeconds: Int64
    private let logger: Logger
    /// The request whose body is being read (head seen, end not yet).
    private var request: (method: HTTPMethod, path: Substring)?
    /// When the server started waiting for more of the body; nil while it is not waiting.
    private var waitingSince: NIODeadline?
    private var check: Scheduled<Void>?
    private var hasTimedOut = false
    /// The answer to the request being read has started (it was refused before its body came).
    private var isAnswered = false

    init(requestBodyTimeout: Duration, logger: Logger) {
        self.timeout = TimeAmount(requestBodyTimeout)
        self.timeoutSeconds = requestBodyTimeout.components.seconds
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if case .head(let head) = part {
            unstartedAnswers.append(RequestFraming(version: head.version, isKeepAlive: head.isKeepAlive))
        }
        // After the answer to a malformed request nothing more is read.
        guard !hasAnsweredMalformedRequest else { return }
        switch part {
        case .head:
            unfinishedAnswers += 1
            isReadingRequest = true
        case .body:
            break
        case .end:
            isReadingRequest = false
        }
        // What comes after the timeout belongs to a request that has already failed.
        guard !hasTimedOut else { return }
        waitingSince = nil
        switch part {
        case .head(let head):
            request = (
                head.method, head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            )
            isAnswered = false
        case .body:
            break
        case .end:
            request = nil
        }
        context.fireChannelRead(data)
    }

    func read(context: ChannelHandlerContext) {
        if request != nil, waitingSince == nil {
            let now = NIODeadline.now()
            waitingSince = now
            scheduleCheck(context, at: now + timeout)
        }
        context.read()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let part = unwrapOutboundIn(data)
        switch part {
        case .head(let head) where head.status.code >= 200: isAnswered = true
        case .end: unfinishedAnswers = max(0, unfinishedAnswers - 1)
        default: break
        }
        writeKeepingPersistence(context: context, part: part, data: data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if hasAnsweredMalformedRequest { return }
        // With a request under way, its handler or Hummingbird gets the error.
        guard unfinishedAnswers == 0, !isReadingRequest, let parseError = Self.parseError(error) else {
            context.fireErrorCaught(error)
            return
        }
        hasAnsweredMalformedRequest = true
        let body = ProblemDetails.malformedRequest("\(parseError)").encoded()
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/problem+json")
        headers.add(name: "content-length", value: String(body.count))
        headers.add(name: "connection", value: "close")
        // Through the persistence rules: they close the connection after it.
        let parts: [HTTPServerResponsePart] = [
            .head(HTTPResponseHead(version: .http1_1, status: .badRequest, headers: headers)),
            .body(.byteBuffer(ByteBuffer(bytes: body))), .end(nil),
        ]
        for part in parts {
            writeKeepingPersistence(context: context, part: part, data: wrapOutboundOut(part), promise: nil)
        }
        context.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelCheck()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelCheck()
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

    /// Writes `part` (which `data` wraps) with the persistence rules applied to its head, and
    /// closes the connection after the end of an answer that does not persist.
    private func writeKeepingPersistence(
        context: ChannelHandlerContext, part: HTTPServerResponsePart, data: NIOAny, promise: EventLoopPromise<Void>?
    ) {
        switch part {
        case .head(var head) where head.status.code >= 200:
            // A parse error is answered before any request was read: it is HTTP/1.1 and closes.
            let request = unstartedAnswers.popFirst() ?? RequestFraming(version: .http1_1, isKeepAlive: true)
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

    private func scheduleCheck(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        // One check at a time: a pending one is never later than needed, as the wait only
        // starts later.
        guard check == nil else { return }
        check = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.check = nil
            self.checkWait(context)
        }
    }

    private func cancelCheck() {
        check?.cancel()
        check = nil
    }

    private func checkWait(_ context: ChannelHandlerContext) {
        guard let request, let waitingSince, !hasTimedOut else { return }
        let deadline = waitingSince + timeout
        guard NIODeadline.now() >= deadline else {
            scheduleCheck(context, at: deadline)
            return
        }
        hasTimedOut = true
        logger.warning(
            "request body timed out: no data for \(timeoutSeconds) s; \(isAnswered ? "closing the connection" : "answering 408 and closing the connection")",
            metadata: ["method": "\(request.method.rawValue)", "path": "\(request.path)"])
        context.fireErrorCaught(RequestBodyTimeout(seconds: timeoutSeconds))
    }
}

/// A request body stopped arriving for ``seconds`` (``SidecarHTTP1Handler``).
struct RequestBodyTimeout: Error, Sendable {
    let seconds: Int64
}
