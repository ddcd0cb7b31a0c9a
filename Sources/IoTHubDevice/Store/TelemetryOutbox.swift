import AsyncPrimitives
import Dispatch
import DurableLog
public import FoundationEssentials
public import IoTHubProtocol
public import Logging
import NIOConcurrencyHelpers

/// How a telemetry outbox keeps what it accepted.
public struct OutboxConfiguration: Sendable {
    /// What a full outbox does with a new message.
    public enum WhenFull: String, Sendable, CaseIterable {
        /// Refuses it (``OutboxError/full(bytes:limit:)``): what was accepted stays.
        case rejectNew = "reject-new"
        /// Drops the oldest messages not yet handed to the hub, as many as it takes (counted).
        case dropOldest = "drop-oldest"
    }

    /// Where the outbox's files live (created, mode 0700).
    public var directory: String
    /// The most bytes of messages waiting (their stored size); disk use stays within this plus
    /// one segment file.
    public var maximumBytes: Int
    public var whenFull: WhenFull
    /// How long a message may wait; a message's own `expiryTimeUTC`, when earlier, wins. An
    /// expired message is dropped (counted), never sent.
    public var timeToLive: Duration
    /// The most messages per second sent while draining a backlog (nil: as fast as the hub
    /// acknowledges), so that a long outage does not end in the hub's throttling.
    public var drainRate: Int?

    public init(
        directory: String, maximumBytes: Int = 256 << 20, whenFull: WhenFull = .rejectNew,
        timeToLive: Duration = .seconds(7200),
        drainRate: Int? = nil
    ) {
        self.directory = directory
        self.maximumBytes = maximumBytes
        self.whenFull = whenFull
        self.timeToLive = timeToLive
        self.drainRate = drainRate
    }
}

/// Why the outbox did not take messages.
public enum OutboxError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The outbox holds its maximum (with ``OutboxConfiguration/WhenFull/rejectNew``).
    case full(bytes: Int, limit: Int)
    /// The file system is full.
    case noSpace(String)
    /// A message would be refused by the hub (too large, a topic too long): nothing was taken.
    case invalid(index: Int, IoTHubError)
    /// Writing failed otherwise, or the outbox is closed.
    case storageFailed(String)

    public var description: String {
        switch self {
        case .full(let bytes, let limit): "the outbox is full: \(bytes) bytes wait, the limit is \(limit)"
        case .noSpace(let detail): "no space left for the outbox: \(detail)"
        case .invalid(let index, let error): "message \(index): \(error)"
        case .storageFailed(let detail): "the outbox could not store the messages: \(detail)"
        }
    }
}

/// The outbox's figures.
public struct OutboxStatus: Sendable, Equatable {
    /// Messages waiting or on their way to the hub, and their stored bytes.
    public var messages: Int
    public var bytes: Int
    public var maximumBytes: Int
    /// When the oldest waiting message was accepted.
    public var oldestAcceptedAt: Date?
    /// Since the outbox was opened: messages the hub acknowledged, that expired, that were
    /// dropped to make room, and that were refused because the outbox was full.
    public var delivered: Int
    public var expired: Int
    public var dropped: Int
    public var rejected: Int
    /// Whether a new message would now be refused or would push out an old one.
    public var isFull: Bool
    /// What opening found: unreadable spans moved to quarantine, bytes of a torn write cut off.
    public var quarantinedSpans: Int
    public var truncatedBytes: Int
}

/// What opening a store (outbox, inbox) found and repaired: unreadable spans moved to
/// quarantine (with where they went), bytes of a torn write cut off the end.
public struct StoreRepair: Sendable, Equatable {
    public var quarantinedSpans: Int
    public var quarantinePaths: [String]
    public var truncatedBytes: Int

    init(_ report: DurableLog.RecoveryReport) {
        quarantinedSpans = report.quarantined.count
        quarantinePaths = report.quarantined.map(\.path)
        truncatedBytes = report.truncatedBytes
    }

    public var isClean: Bool { quarantinedSpans == 0 && truncatedBytes == 0 }
}

/// What the outbox tells listeners.
public enum OutboxEvent: Sendable, Equatable {
    /// It became full.
    case full
    /// Its last message was delivered (or expired, or dropped).
    case emptied
    /// Messages were dropped to make room.
    case dropped(count: Int)
    /// Messages expired before they could be sent.
    case expired(count: Int)
}

/// A durable telemetry outbox: ``accept(_:)`` returns once messages are on disk (synced), and
/// ``run()`` delivers them to the hub through a device client, in the order accepted, at least
/// once: a message is sent again only after a crash or a dropped connection, with its message id,
/// so that the cloud can tell the copy. Bounded in bytes, with a time to live; survives `kill -9`
/// and power loss. See docs/ARCHITECTURE.md, "Store and forward".
public final class TelemetryOutbox: Sendable {
    public let configuration: OutboxConfiguration
    private let client: IoTHubDeviceClient
    private let log: DurableLog
    private let logger: Logger
    /// Reads of the log and the cursors that go with them happen here, one at a time.
    private let io = DispatchQueue(label: "iothub-outbox-io")
    private let state: NIOLockedValueBox<State>
    private let arrivals = ChangeSignal()
    private let broadcaster = Broadcaster<OutboxEvent>(bufferingPolicy: .bufferingNewest(64))

    private struct State {
        var messages = 0
        var bytes = 0
        /// Bytes promised to appends under way.
        var reserved = 0
        var delivered = 0
        var expired = 0
        var dropped = 0
        var rejected = 0
        /// Frames up to here were handed to the delivery loop.
        var readThrough: UInt64
        /// Frames up to here were dropped to make room (those after `readThrough` are skipped).
        var droppedThrough: UInt64
        var isFull = false
        /// A drop episode: logged once, until the outbox is no longer full.
        var dropping = false
        var closed = false
        /// Frames just stored, by sequence, as they were accepted: the delivery loop takes them
        /// from here instead of reading them back from the disk and decoding them (a frame
        /// missing here is read from the disk). At most ``recentBytesLimit`` stored bytes.
        var recent: [UInt64: StoredFrame] = [:]
        var recentBytes = 0
        /// Frames up to here have been answered as stored (the log answers in order). One after
        /// it may already be readable on disk, but is on its way here: the delivery loop waits
        /// for it rather than reading it back.
        var storedThrough: UInt64
        /// Frames the delivery loop read back from the log (not found in memory).
        var framesReadBack = 0
    }

    /// A frame as accepted: its messages with their deadlines, and what it takes on disk.
    private struct StoredFrame {
        var entries: [(deadline: Date, message: Message)]
        var bytes: Int
    }

    /// The most stored bytes of just-accepted frames kept in memory for the delivery loop: enough
    /// for the in-flight window, so that an outbox that keeps up never reads its own frames back.
    static let recentBytesLimit = 1 << 20

    /// Opens (or creates) the outbox in `configuration.directory` for `client`'s identity,
    /// recovering what a crash left.
    public init(
        client: IoTHubDeviceClient, configuration: OutboxConfiguration, logger: Logger = Logger(label: "iothub-outbox")
    ) throws(OutboxError) {
        guard configuration.maximumBytes > 0 else { throw .storageFailed("the outbox's maximum size must be positive") }
        self.client = client
        self.configuration = configuration
        self.logger = logger
        let segmentSize = min(max(configuration.maximumBytes / 16, 64 << 10), 16 << 20)
        do {
            log = try DurableLog(directory: configuration.directory, options: .init(segmentSize: segmentSize))
        } catch {
            throw .storageFailed("\(error)")
        }
        var initial = State(
            readThrough: log.discardedThrough, droppedThrough: log.discardedThrough, storedThrough: log.lastSequence)
        // What waits: every frame after the watermark (read in pieces, nothing kept).
        var cursor = log.discardedThrough
        while let page = try? log.read(after: cursor, maximumBytes: 1 << 20), let last = page.last {
            for frame in page {
                if let count = OutboxFrame.messageCount(frame.payload) {
                    initial.messages += count
                    initial.bytes += OutboxFrame.storedSize(frame.payload)
                }
            }
            cursor = last.sequence
        }
        do {
            try StoreIdentity.claim(
                StoreIdentity.name(hostName: client.hostName, deviceId: client.deviceId, moduleId: client.moduleId),
                directory: configuration.directory,
                holdsMessages: initial.messages > 0)
        } catch {
            log.shutdown()
            throw .storageFailed("\(error)")
        }
        state = NIOLockedValueBox(initial)
        let recovery = log.recovery
        if !recovery.isClean {
            logger.warning(
                "the outbox was repaired on opening",
                metadata: [
                    "truncatedBytes": "\(recovery.truncatedBytes)",
                    "quarantined": "\(recovery.quarantined.map(\.path))",
                ])
        }
    }

    deinit {
        log.shutdown()
    }

    // MARK: Accepting

    /// Stores `messages` durably, all or none, in their order, and returns their message ids
    /// (a message without one gets one). Throws ``OutboxError/invalid(index:_:)`` for a message
    /// the hub would refuse, ``OutboxError/full(bytes:limit:)`` when there is no room (with
    /// ``OutboxConfiguration/WhenFull/rejectNew``), ``OutboxError/noSpace(_:)`` when the disk is full.
    public func accept(_ messages: [Message]) async throws(OutboxError) -> [String] {
        var messages = messages
        let acceptedAt = Date()
        let ttlDeadline = acceptedAt.addingTimeInterval(Self.seconds(configuration.timeToLive))
        var entries: [(deadline: Date, message: Message)] = []
        entries.reserveCapacity(messages.count)
        for index in messages.indices {
            do throws(IoTHubError) {
                try client.checkSendable(messages[index])
            } catch {
                throw .invalid(index: index, error)
            }
            if messages[index].messageId == nil { messages[index].messageId = UUID().lowercasedString }
            let expiry = messages[index].expiryDate
            entries.append((min(ttlDeadline, expiry ?? ttlDeadline), messages[index]))
        }
        let frame = OutboxFrame.encode(entries, acceptedAt: acceptedAt)
        let size = OutboxFrame.storedSize(frame)
        try await reserve(size)
        do {
            // Counted (and handed to the delivery loop) as the log answers, in the order stored,
            // before the caller resumes.
            _ = try await log.append([frame]) { [self, entries] sequences in
                stored(StoredFrame(entries: entries, bytes: size), sequences: sequences)
            }
        } catch {
            state.withLockedValue { $0.reserved -= size }
            if case .writeFailed(let detail, noSpace: true) = error {
                state.withLockedValue { $0.rejected += messages.count }
                throw .noSpace(detail)
            }
            throw .storageFailed("\(error)")
        }
        return messages.map { $0.messageId ?? "" }
    }

    /// Counts a frame that is now on disk and keeps it in memory for the delivery loop (while
    /// there is room), then wakes the loop.
    private func stored(_ frame: StoredFrame, sequences: Range<UInt64>) {
        let sequence = sequences.lowerBound
        state.withLockedValue { state in
            state.storedThrough = max(state.storedThrough, sequences.upperBound - 1)
            state.reserved -= frame.bytes
            state.messages += frame.entries.count
            state.bytes += frame.bytes
            // Not when the delivery loop has already passed it (dropped it to make room: it was
            // readable on disk just before this answer), nor beyond the memory allowed.
            if sequence > max(state.readThrough, state.droppedThrough),
                state.recentBytes + frame.bytes <= Self.recentBytesLimit
            {
                state.recent[sequence] = frame
                state.recentBytes += frame.bytes
            }
        }
        arrivals.signal()
    }

    /// Makes room for `size` bytes: reserves them, or drops old messages, or refuses.
    private func reserve(_ size: Int) async throws(OutboxError) {
        let limit = configuration.maximumBytes
        let outcome = state.withLockedValue { state -> (fits: Bool, becameFull: Bool) in
            guard state.bytes + state.reserved + size > limit else {
                state.reserved += size
                return (true, false)
            }
            let becameFull = !state.isFull
            state.isFull = true
            return (false, becameFull)
        }
        if outcome.fits { return }
        if outcome.becameFull { broadcaster.yield(.full) }
        switch configuration.whenFull {
        case .rejectNew:
            let bytes = state.withLockedValue { state in
                state.rejected += 1
                return state.bytes
            }
            throw .full(bytes: bytes, limit: limit)
        case .dropOldest:
            let dropped = await dropOldest(toFit: size)
            if dropped > 0 {
                broadcaster.yield(.dropped(count: dropped))
                let first = state.withLockedValue { state in
                    defer { state.dropping = true }
                    return !state.dropping
                }
                if first {
                    logger.warning(
                        "the outbox is full: dropping its oldest messages to make room", metadata: ["limit": "\(limit)"]
                    )
                }
            }
            // What is on its way to the hub cannot be dropped: over the limit until it is delivered.
            state.withLockedValue { $0.reserved += size }
        }
    }

    /// Drops the oldest messages the delivery loop has not taken until `size` more bytes fit;
    /// returns how many it dropped.
    private func dropOldest(toFit size: Int) async -> Int {
        let limit = configuration.maximumBytes
        return await onIO { [self] in
            var count = 0
            while true {
                let (cursor, needed) = state.withLockedValue { state in
                    (max(state.readThrough, state.droppedThrough), state.bytes + state.reserved + size - limit)
                }
                guard needed > 0, let frames = try? log.read(after: cursor, maximumFrames: 64), !frames.isEmpty else {
                    return count
                }
                var freed = 0
                for frame in frames where freed < needed {
                    let messages = OutboxFrame.messageCount(frame.payload) ?? 0
                    let bytes = OutboxFrame.storedSize(frame.payload)
                    let dropped = state.withLockedValue { state -> Bool in
                        // The delivery loop takes frames from memory meanwhile: not those.
                        guard frame.sequence > max(state.readThrough, state.droppedThrough) else { return false }
                        forgetRecent(from: frame.sequence, through: frame.sequence, in: &state)
                        state.droppedThrough = frame.sequence
                        state.messages -= messages
                        state.bytes -= bytes
                        state.dropped += messages
                        return true
                    }
                    // Taken meanwhile: read on from where the delivery loop got to.
                    guard dropped else { break }
                    freed += bytes
                    count += messages
                }
            }
        }
    }

    // MARK: Delivering

    /// The most messages read from the log in one go (a page).
    static let pageSize = 500
    /// The in-flight window: more pages are taken while fewer than this many are on their way…
    static let windowPages = 3
    /// …and fewer messages and bytes than these.
    static let windowMessages = 1000
    static let windowBytes = 2 << 20

    /// Delivers through the client until cancelled (or until the client is shut down): in the
    /// order accepted, pipelined, each message again after a failure that may have lost it, until
    /// the hub acknowledges it or it expires. Pages are read and handed to the connection while
    /// earlier ones still wait for their acknowledgements, so the in-flight window does not
    /// empty between pages; frames leave the disk in order, once every page up to them is done.
    public func run() async {
        var pacer = configuration.drainRate.map { DrainPacer(messagesPerSecond: $0) }
        await withTaskGroup(of: (Int, PageOutcome).self) { group in
            // Pages taken and not finished, in the order taken; an outcome once their send ended.
            var window: [(id: Int, page: PageMarks, outcome: PageOutcome?)] = []
            var nextId = 0
            var stopping = false
            while true {
                var generation = arrivals.generation
                if !stopping, !Task.isCancelled {
                    // Pages are taken only on a live connection: libmosquitto would keep a
                    // message handed over without one and send it after the reconnect, even if
                    // it expired meanwhile. While waiting (nothing in flight), what expires at
                    // the head of the outbox is counted.
                    if window.isEmpty, !client.isConnected { await waitForConnection() }
                    while window.count < Self.windowPages, client.isConnected, !Task.isCancelled,
                        window.reduce(0, { $0 + $1.page.messages }) < Self.windowMessages,
                        window.reduce(0, { $0 + $1.page.bytes }) < Self.windowBytes
                    {
                        generation = arrivals.generation
                        guard let page = await nextPage() else { break }
                        var pending: [Message] = []
                        var deadlines: [Date] = []
                        var expired = 0
                        let now = Date()
                        for entry in page.entries {
                            if entry.deadline < now {
                                expired += 1
                            } else {
                                pending.append(entry.message)
                                deadlines.append(entry.deadline)
                            }
                        }
                        if let pace = pacer?.delay(for: pending.count) { try? await Task.sleep(for: pace) }
                        let id = nextId
                        nextId += 1
                        window.append((id, page.marks, nil))
                        // The next page goes to the connection only after this one: acceptance order.
                        let handedOver = OneWaySignal()
                        group.addTask { [self, pending, deadlines, expired] in
                            var outcome = await send(pending, deadlines: deadlines) { handedOver.signal() }
                            handedOver.signal()
                            outcome.expired += expired
                            return (id, outcome)
                        }
                        await handedOver.wait()
                    }
                }
                if window.isEmpty {
                    if stopping || Task.isCancelled { return }
                    await arrivals.wait(afterGeneration: generation, timeout: .seconds(1))
                    continue
                }
                guard let (id, outcome) = await group.next() else { return }
                if let index = window.firstIndex(where: { $0.id == id }) { window[index].outcome = outcome }
                if outcome.stopped { stopping = true }
                // The longest prefix of done pages is finished, in order.
                while let first = window.first, let done = first.outcome, !done.stopped {
                    window.removeFirst()
                    finish(first.page, delivered: done.delivered, expired: done.expired, keeping: window.first?.page)
                }
                if stopping {
                    // The rest end too (the client is shut down, or the task is cancelled); what
                    // is not finished is read again next time.
                    while await group.next() != nil {}
                    if let first = window.first { giveBack(from: first.page) }
                    return
                }
            }
        }
    }

    /// What a page's delivery came to: messages acknowledged, expired (before or while sending),
    /// and whether delivery stopped (the client was shut down, or the task cancelled).
    private struct PageOutcome: Sendable {
        var delivered = 0
        var expired = 0
        var stopped = false
    }

    /// What the delivery loop keeps of a page while it is in flight (its messages go with the
    /// task sending them).
    private struct PageMarks {
        /// The page's frames are those after `previous`, through `lastSequence`.
        var previous: UInt64
        var lastSequence: UInt64
        var bytes: Int
        var messages: Int
    }

    private struct Page {
        var entries: [(deadline: Date, message: Message)] = []
        var marks: PageMarks

        /// An empty page of the frames after `cursor`.
        init(after cursor: UInt64) {
            marks = PageMarks(previous: cursor, lastSequence: cursor, bytes: 0, messages: 0)
        }

        /// Adds the next frame: its sequence, its messages (fewer than it counts when it could
        /// not be read) and what it takes on disk.
        mutating func take(
            _ sequence: UInt64, entries: [(deadline: Date, message: Message)], messages: Int, bytes: Int
        ) {
            marks.lastSequence = sequence
            marks.bytes += bytes
            marks.messages += messages
            self.entries += entries
        }
    }

    /// The next frames the delivery loop has not taken (after those dropped), marked taken: from
    /// memory when the next one is kept there, otherwise read from the log a few frames at a
    /// time until the page is full, so that no more is read than is taken. Only frames already
    /// answered as stored: those after them come through memory (or, beyond its bound, are read
    /// once they are answered).
    private func nextPage() async -> Page? {
        if let page = nextPageFromMemory() { return page }
        let onDisk = state.withLockedValue { max($0.readThrough, $0.droppedThrough) < $0.storedThrough }
        guard onDisk else { return nil }
        return await onIO { [self] in
            let (cursor, storedThrough) = state.withLockedValue {
                (max($0.readThrough, $0.droppedThrough), $0.storedThrough)
            }
            var framesRead = 0
            var page = Page(after: cursor)
            reading: while page.entries.count < Self.pageSize, page.marks.bytes < 1 << 20,
                let frames = try? log.read(after: page.marks.lastSequence, maximumFrames: 8, maximumBytes: 256 << 10),
                !frames.isEmpty
            {
                for frame in frames {
                    if frame.sequence > storedThrough { break reading }
                    framesRead += 1
                    let decoded = OutboxFrame.decode(frame.payload)
                    if decoded == nil {
                        logger.error(
                            "an outbox frame could not be decoded; its messages are dropped",
                            metadata: ["sequence": "\(frame.sequence)"])
                    }
                    page.take(
                        frame.sequence, entries: decoded ?? [], messages: OutboxFrame.messageCount(frame.payload) ?? 0,
                        bytes: OutboxFrame.storedSize(frame.payload))
                    if page.entries.count >= Self.pageSize { break reading }
                }
            }
            guard page.marks.lastSequence > cursor else { return nil }
            state.withLockedValue { state in
                state.readThrough = page.marks.lastSequence
                state.framesReadBack += framesRead
                forgetRecent(from: cursor + 1, through: page.marks.lastSequence, in: &state)
            }
            return page
        }
    }

    /// The next page, when its first frame is still in memory: the frames that follow it there,
    /// up to a page, marked taken; nil when the next frame must be read from the disk.
    private func nextPageFromMemory() -> Page? {
        state.withLockedValue { state -> Page? in
            guard !state.recent.isEmpty else { return nil }
            let cursor = max(state.readThrough, state.droppedThrough)
            guard state.recent[cursor + 1] != nil else { return nil }
            var page = Page(after: cursor)
            while page.entries.count < Self.pageSize, page.marks.bytes < 1 << 20,
                let frame = state.recent.removeValue(forKey: page.marks.lastSequence + 1)
            {
                state.recentBytes -= frame.bytes
                page.take(
                    page.marks.lastSequence + 1, entries: frame.entries, messages: frame.entries.count,
                    bytes: frame.bytes)
            }
            state.readThrough = page.marks.lastSequence
            return page
        }
    }

    /// Lets go of the frames in memory from `first` through `last` (taken from the disk, or
    /// dropped), so that every frame kept there lies after the delivery loop's cursor.
    private func forgetRecent(from first: UInt64, through last: UInt64, in state: inout State) {
        guard !state.recent.isEmpty, first <= last else { return }
        for sequence in first...last {
            if let frame = state.recent.removeValue(forKey: sequence) { state.recentBytes -= frame.bytes }
        }
    }

    /// Returns once the client is connected (connecting it when it may and there is something
    /// to send: an empty outbox needs no connection, so a disconnect or a drop without
    /// connection retry is not undone), or cancelled; meanwhile counts the frames at the head
    /// whose messages have all expired.
    private func waitForConnection() async {
        var delay = Duration.milliseconds(100)
        while !client.isConnected, !Task.isCancelled {
            await expireAtHead()
            if client.configuration.autoConnect, client.status.state == .disconnected,
                state.withLockedValue({ $0.messages }) > 0
            {
                try? await client.connect()
                if client.isConnected { return }
            }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(1))
        }
    }

    /// Drops (as expired) the frames at the head whose messages have all expired, and lets
    /// them leave the disk.
    private func expireAtHead() async {
        let expired = await onIO { [self] () -> Int in
            var count = 0
            let now = Date()
            while true {
                let cursor = state.withLockedValue { max($0.readThrough, $0.droppedThrough) }
                guard let frames = try? log.read(after: cursor, maximumFrames: 64), !frames.isEmpty else { break }
                var stop = false
                for frame in frames {
                    guard let entries = OutboxFrame.decode(frame.payload), entries.allSatisfy({ $0.deadline < now })
                    else {
                        stop = true
                        break
                    }
                    let bytes = OutboxFrame.storedSize(frame.payload)
                    count += entries.count
                    state.withLockedValue { state in
                        forgetRecent(from: frame.sequence, through: frame.sequence, in: &state)
                        state.droppedThrough = frame.sequence
                        state.messages -= entries.count
                        state.bytes -= bytes
                        state.expired += entries.count
                    }
                }
                if stop { break }
            }
            return count
        }
        guard expired > 0 else { return }
        // Called between pages (nothing in flight): everything up to the dropped frames can go.
        let (through, emptied) = state.withLockedValue { ($0.droppedThrough, $0.messages == 0) }
        log.discard(through: through)
        broadcaster.yield(.expired(count: expired))
        if emptied { broadcaster.yield(.emptied) }
    }

    /// Sends until each message is acknowledged or expired; returns the counts, and whether
    /// the client was shut down or the task cancelled (delivery stops). `handedOver` is called
    /// once the first attempt is queued on the connection.
    private func send(_ messages: [Message], deadlines: [Date], handedOver: @escaping @Sendable () -> Void) async
        -> PageOutcome
    {
        var pending = Array(zip(messages, deadlines))
        var outcome = PageOutcome()
        var backoff = Duration.milliseconds(250)
        var first = true
        while !pending.isEmpty {
            let batch = pending.map { $0.0 }
            let results: [Result<Void, IoTHubError>]
            if first {
                results = await client.send(batch, handedOver: handedOver)
            } else {
                results = await client.send(batch)
            }
            first = false
            var retry: [(Message, Date)] = []
            for (entry, result) in zip(pending, results) {
                switch result {
                case .success:
                    outcome.delivered += 1
                case .failure(.clientError(let detail)) where detail.contains("shut down"):
                    outcome.stopped = true
                    return outcome
                case .failure(.valueError), .failure(.messageTooLarge), .failure(.topicTooLong):
                    // Checked when accepted; cannot be sent as it is.
                    logger.error(
                        "an outbox message was refused before sending; it is dropped",
                        metadata: ["messageId": "\(entry.0.messageId ?? "")"])
                    outcome.expired += 1
                case .failure:
                    if entry.1 < Date() { outcome.expired += 1 } else { retry.append(entry) }
                }
            }
            pending = retry
            if !pending.isEmpty {
                if Task.isCancelled {
                    outcome.stopped = true
                    return outcome
                }
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
        return outcome
    }

    /// A page is done: its frames (and any dropped after them) leave the disk, but never those
    /// of `keeping`, the oldest page still in flight.
    private func finish(_ page: PageMarks, delivered: Int, expired: Int, keeping inFlight: PageMarks?) {
        let (emptied, through) = state.withLockedValue { state -> (Bool, UInt64) in
            state.messages -= page.messages
            state.bytes -= page.bytes
            state.delivered += delivered
            state.expired += expired
            // Messages of a frame that could not be read back count as dropped.
            state.dropped += max(0, page.messages - delivered - expired)
            if state.isFull, state.bytes + state.reserved < configuration.maximumBytes / 10 * 9 {
                state.isFull = false
                state.dropping = false
            }
            // Frames dropped to make room lie after every page taken before the drop: they go
            // with this page only up to the next page still in flight.
            let through = max(page.lastSequence, state.droppedThrough)
            return (state.messages == 0 && page.messages > 0, min(through, inFlight?.previous ?? through))
        }
        log.discard(through: through)
        if expired > 0 { broadcaster.yield(.expired(count: expired)) }
        if emptied { broadcaster.yield(.emptied) }
    }

    /// Delivery stopped with pages in flight (cancelled, or the client was shut down): they stay
    /// on disk, to be read again from `page`, the oldest (their delivered messages are sent
    /// again then, with their ids).
    private func giveBack(from page: PageMarks) {
        state.withLockedValue { state in
            state.readThrough = min(state.readThrough, page.previous)
        }
    }

    // MARK: Observing

    /// The outbox's figures now.
    public func status() async -> OutboxStatus {
        // An empty outbox has no oldest message to read from the disk.
        let isEmpty = state.withLockedValue { $0.messages == 0 }
        let oldest =
            isEmpty
            ? nil
            : await onIO { [self] () -> Date? in
                let cursor = state.withLockedValue {
                    $0.droppedThrough > log.discardedThrough ? $0.droppedThrough : log.discardedThrough
                }
                return (try? log.read(after: cursor, maximumFrames: 1))?.first.flatMap {
                    OutboxFrame.acceptedAt($0.payload)
                }
            }
        let recovery = log.recovery
        return state.withLockedValue { state in
            OutboxStatus(
                messages: state.messages, bytes: state.bytes, maximumBytes: configuration.maximumBytes,
                oldestAcceptedAt: state.messages > 0 ? oldest : nil,
                delivered: state.delivered, expired: state.expired, dropped: state.dropped, rejected: state.rejected,
                isFull: state.isFull,
                quarantinedSpans: recovery.quarantined.count, truncatedBytes: recovery.truncatedBytes)
        }
    }

    /// Frames and stored bytes kept in memory for the delivery loop now (for tests).
    var framesInMemory: (frames: Int, bytes: Int) {
        state.withLockedValue { ($0.recent.count, $0.recentBytes) }
    }

    /// Frames the delivery loop has read back from the log so far (for tests).
    var framesReadBack: Int {
        state.withLockedValue { $0.framesReadBack }
    }

    /// Full, emptied, dropped and expired, as they happen.
    public func events() -> AsyncStream<OutboxEvent> {
        broadcaster.stream()
    }

    /// Waits until every message was delivered (or expired), at most `timeout`; returns whether
    /// the outbox is empty. For a graceful shutdown: what is left stays on disk.
    public func waitUntilEmpty(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while state.withLockedValue({ $0.messages }) > 0, ContinuousClock.now < deadline, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(50))
        }
        return state.withLockedValue { $0.messages } == 0
    }

    /// Stops writing; what is stored stays for the next opening.
    public func close() {
        log.shutdown()
        broadcaster.finish()
    }

    private func onIO<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            io.async { continuation.resume(returning: work()) }
        }
    }

    static func seconds(_ duration: Duration) -> TimeInterval {
        TimeInterval(duration.components.seconds) + TimeInterval(duration.components.attoseconds) / 1e18
    }
}

/// Paces a drain to a number of messages per second.
struct DrainPacer {
    let messagesPerSecond: Int
    private var next = ContinuousClock.now

    init(messagesPerSecond: Int) {
        self.messagesPerSecond = max(1, messagesPerSecond)
    }

    /// How long to wait before sending `count` messages.
    mutating func delay(for count: Int) -> Duration? {
        let now = ContinuousClock.now
        let start = max(now, next)
        next = start + .seconds(Double(count) / Double(messagesPerSecond))
        return start > now ? start - now : nil
    }
}

/// One accepted request on disk: kind 1, when it was accepted, and its messages with their
/// deadlines.
///
///     kind 1 byte (1), accepted u64 (ms since 1970), count u32, then per message:
///     deadline u64 (ms since 1970), the message (StoredMessageCodec)
enum OutboxFrame {
    static let kind: UInt8 = 1

    static func encode(_ entries: [(deadline: Date, message: Message)], acceptedAt: Date) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(
            entries.reduce(13) { $0 + 8 + StoredMessageCodec.encodedSizeBound($1.message) })
        bytes.append(kind)
        StoredMessageCodec.appendInteger(milliseconds(acceptedAt), to: &bytes)
        StoredMessageCodec.appendInteger(UInt32(entries.count), to: &bytes)
        for entry in entries {
            StoredMessageCodec.appendInteger(milliseconds(entry.deadline), to: &bytes)
            StoredMessageCodec.encode(entry.message, into: &bytes)
        }
        return bytes
    }

    static func decode(_ bytes: [UInt8]) -> [(deadline: Date, message: Message)]? {
        var reader = ByteReader(bytes)
        guard reader.readByte() == kind, reader.readInteger(UInt64.self) != nil,
            let count = reader.readInteger(UInt32.self)
        else { return nil }
        var entries: [(deadline: Date, message: Message)] = []
        for _ in 0..<count {
            guard let deadline = reader.readInteger(UInt64.self), let message = StoredMessageCodec.decode(&reader)
            else { return nil }
            entries.append((Date(timeIntervalSince1970: TimeInterval(deadline) / 1000), message))
        }
        return entries
    }

    static func messageCount(_ bytes: [UInt8]) -> Int? {
        var reader = ByteReader(bytes)
        guard reader.readByte() == kind, reader.readInteger(UInt64.self) != nil else { return nil }
        return reader.readInteger(UInt32.self).map(Int.init)
    }

    static func acceptedAt(_ bytes: [UInt8]) -> Date? {
        var reader = ByteReader(bytes)
        guard reader.readByte() == kind, let milliseconds = reader.readInteger(UInt64.self) else { return nil }
        return Date(timeIntervalSince1970: TimeInterval(milliseconds) / 1000)
    }

    /// What a frame takes on disk.
    static func storedSize(_ payload: [UInt8]) -> Int {
        payload.count + 20
    }

    private static func milliseconds(_ date: Date) -> UInt64 {
        UInt64(max(0, date.timeIntervalSince1970 * 1000))
    }
}
