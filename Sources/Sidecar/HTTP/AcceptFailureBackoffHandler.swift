import Glibc
import Logging
import NIOCore

/// Pauses accepting connections while `accept` fails for want of resources (no file descriptor
/// left: `EMFILE`, `ENFILE`; no kernel memory: `ENOBUFS`, `ENOMEM`), on the listening channel.
///
/// NIO's own `AcceptBackoffHandler`, which its server bootstrap adds, does not stop the spin on
/// Linux: a failed `accept` leaves the channel's read pending, so the channel stays registered
/// for readability, and the level-triggered epoll reports the waiting connection again at once.
/// That handler only delays the next `read()`, which never comes. Turning `autoRead` off
/// unregisters the socket; it is turned back on after a delay that doubles with every failure
/// (20 ms up to 1 s) and starts over once a connection is accepted.
///
/// An episode starts with the first failure, which logs one warning, and ends, with one notice,
/// when accepting has been back on for a second without a failure and either a connection was
/// accepted since the last failure or a descriptor can be had: while descriptors are scarce,
/// accepts succeed and fail by turns, and that is still one episode. (`accept` fails with
/// `EMFILE` even when no connection is waiting, so the last failure need not be followed by a
/// success.) Connections already open are not affected. The resource errors are handled here and
/// not passed on: in the async server bootstrap an error that reaches the end of the pipeline
/// ends the server's stream of connections.
final class AcceptFailureBackoffHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel
    typealias OutboundIn = Never
    typealias OutboundOut = Never

    static let firstDelay = TimeAmount.milliseconds(20)
    static let longestDelay = TimeAmount.seconds(1)
    /// How long accepting must be back on without a failure to end an episode.
    static let quietPeriod = TimeAmount.seconds(1)

    /// A run of failed accepts.
    private struct Episode {
        let started = NIODeadline.now()
        var failures = 0
        var delay = AcceptFailureBackoffHandler.firstDelay
        /// A connection was accepted since the latest failure.
        var hasAcceptedSinceFailure = false
    }

    private let logger: Logger
    private var episode: Episode?
    /// Turns `autoRead` back on; set while accepting is paused.
    private var resumption: Scheduled<Void>?
    /// Ends the episode unless another failure comes first.
    private var ending: Scheduled<Void>?

    init(logger: Logger) {
        self.logger = logger
    }

    /// Puts the handler first in the listening channel's pipeline, where it sees accept errors
    /// before NIO's handlers do.
    static func install(on serverChannel: any Channel, logger: Logger) async throws {
        try await serverChannel.eventLoop.submit {
            try serverChannel.pipeline.syncOperations.addHandler(
                AcceptFailureBackoffHandler(logger: logger), position: .first)
        }.get()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let error = error as? IOError, [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(error.errnoCode) else {
            context.fireErrorCaught(error)
            return
        }
        ending?.cancel()
        ending = nil
        var current = episode ?? Episode()
        if episode == nil {
            let shortage =
                [EMFILE, ENFILE].contains(error.errnoCode)
                ? "no file descriptor is left" : "the system is out of socket memory"
            logger.warning(
                "cannot accept connections: \(shortage); new connections wait until it recovers, open ones are still served",
                metadata: ["errno": "\(error.errnoCode)"])
        }
        current.failures += 1
        current.hasAcceptedSinceFailure = false
        let delay = current.delay
        current.delay = min(current.delay * 2, Self.longestDelay)
        episode = current
        pause(context, for: delay)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if var current = episode {
            current.hasAcceptedSinceFailure = true
            current.delay = Self.firstDelay
            episode = current
        }
        context.fireChannelRead(data)
    }

    func read(context: ChannelHandlerContext) {
        // Paused: turning autoRead back on reads anyway.
        guard resumption == nil else { return }
        context.read()
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimers()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        let wasPaused = resumption != nil
        cancelTimers()
        if wasPaused { setAutoRead(true, context) }
    }

    private func pause(_ context: ChannelHandlerContext, for delay: TimeAmount) {
        guard resumption == nil else { return }
        setAutoRead(false, context)
        resumption = context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
            self.resumption = nil
            self.setAutoRead(true, context)
            self.scheduleEndCheck(context)
        }
    }

    private func scheduleEndCheck(_ context: ChannelHandlerContext) {
        guard ending == nil else { return }
        ending = context.eventLoop.assumeIsolated().scheduleTask(in: Self.quietPeriod) {
            self.ending = nil
            self.endEpisodeIfOver(context)
        }
    }

    /// Ends the episode after a quiet period, unless no connection came and still no descriptor
    /// is free: then the next connection would fail again, so it is checked again later.
    private func endEpisodeIfOver(_ context: ChannelHandlerContext) {
        guard let episode else { return }
        guard episode.hasAcceptedSinceFailure || isDescriptorAvailable() else {
            scheduleEndCheck(context)
            return
        }
        let seconds = Double((NIODeadline.now() - episode.started - Self.quietPeriod).nanoseconds) / 1e9
        logger.notice(
            "accepting connections again",
            metadata: ["failedAccepts": "\(episode.failures)", "seconds": "\((max(0, seconds) * 10).rounded() / 10)"])
        self.episode = nil
    }

    private func cancelTimers() {
        resumption?.cancel()
        resumption = nil
        ending?.cancel()
        ending = nil
    }

    private func setAutoRead(_ on: Bool, _ context: ChannelHandlerContext) {
        do {
            try context.channel.syncOptions?.setOption(ChannelOptions.autoRead, value: on)
        } catch {
            logger.debug("could not set autoRead on the listening socket", metadata: ["error": "\(error)"])
        }
    }
}

/// Whether the process can open one more file descriptor now.
private func isDescriptorAvailable() -> Bool {
    let descriptor = open("/dev/null", O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return false }
    close(descriptor)
    return true
}
