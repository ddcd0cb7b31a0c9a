import AsyncPrimitives
import Dispatch
import DurableLog
public import FoundationEssentials
public import IoTHubProtocol
public import Logging
import NIOConcurrencyHelpers

/// How a cloud-to-device inbox keeps its messages.
public struct InboxConfiguration: Sendable {
    /// Where the inbox's files live (created, mode 0700).
    public var directory: String
    /// The most messages held; beyond it, or beyond ``maximumBytes``, the oldest message not
    /// locked by a receiver is dropped (counted and logged).
    public var maximumMessages: Int
    public var maximumBytes: Int
    /// How long a received message stays locked before it is delivered again.
    public var lockDuration: Duration

    public init(
        directory: String, maximumMessages: Int = 10_000, maximumBytes: Int = 64 << 20,
        lockDuration: Duration = .seconds(60)
    ) {
        self.directory = directory
        self.maximumMessages = maximumMessages
        self.maximumBytes = maximumBytes
        self.lockDuration = lockDuration
    }
}

/// A durable inbox of cloud-to-device messages (or a module's input messages), with locks: a
/// message the client acknowledged to the hub is on disk before the acknowledgement leaves
/// (the client's network thread syncs the inbox before it writes PUBACKs); a receiver gets a
/// message under a lock, and ``complete(_:)`` removes it for good, ``abandon(_:)`` or an expired
/// lock makes it deliverable again with a delivery count one higher. Locks, delivery counts and
/// completions are on disk before the calls return: after `kill -9` every message not completed
/// is delivered again, with its count one higher, and no completed one ever comes back.
/// See docs/ARCHITECTURE.md, "Store and forward".
public final class CloudToDeviceInbox: Sendable {
    /// A message handed to a receiver.
    public struct Lease: Sendable {
        public var lockToken: String
        public var message: Message
        /// 1 on the first delivery.
        public var deliveryCount: Int
        public var lockedUntil: Date
    }

    public enum LeaseError: Error, Equatable, Sendable {
        /// No message holds this lock (completed, expired and delivered again, or never issued).
        case unknownLockToken
        /// The inbox could not record the change; the message stays as it was.
        case storageFailed(String)
    }

    /// Messages held, locked, and dropped for space since opening; the held messages' bytes.
    public struct Depth: Sendable, Equatable {
        public var waiting: Int
        public var locked: Int
        public var dropped: Int
        public var bytes: Int
    }

    public let configuration: InboxConfiguration
    private let log: DurableLog
    private let logger: Logger
    private let state: NIOLockedValueBox<State>
    private let available = FairQueue<UInt64>()
    private let arrivalsBroadcaster = Broadcaster<Message>(bufferingPolicy: .bufferingNewest(1024))
    /// What opening found and repaired.
    public let repair: StoreRepair

    private struct Entry {
        var message: Message
        var size: Int
        var deliveryCount: Int
        var receivedAt: Date
        var lock: (token: String, until: Date, expiry: Task<Void, Never>)?
    }

    private struct State {
        var entries: [UInt64: Entry] = [:]
        var locks: [String: UInt64] = [:]
        var nextId: UInt64 = 1
        var bytes = 0
        var dropped = 0
        /// Received on the network thread, not yet on disk.
        var staged: [(id: UInt64, message: Message, receivedAt: Date)] = []
        /// A snapshot is being written.
        var compacting = false
    }

    /// Opens (or creates) the inbox and takes back every message not completed. With `owner`,
    /// the inbox is bound to that client's identity: opening one that holds another identity's
    /// messages fails (a state directory reused with other credentials).
    public init(
        configuration: InboxConfiguration, owner: IoTHubDeviceClient? = nil,
        logger: Logger = Logger(label: "iothub-inbox")
    ) throws(LeaseError) {
        self.configuration = configuration
        self.logger = logger
        do {
            log = try DurableLog(
                directory: configuration.directory,
                options: .init(segmentSize: 4 << 20, maximumFrameSize: configuration.maximumBytes + (16 << 20)))
        } catch {
            throw .storageFailed("\(error)")
        }
        let recovery = log.recovery
        repair = StoreRepair(recovery)
        var replayed = State()
        var cursor = log.discardedThrough
        while let frames = try? log.read(after: cursor, maximumBytes: 4 << 20), let last = frames.last {
            for frame in frames { Self.replay(frame.payload, onto: &replayed) }
            cursor = last.sequence
        }
        replayed.bytes = replayed.entries.values.reduce(0) { $0 + $1.size }
        if let owner {
            do {
                try StoreIdentity.claim(
                    StoreIdentity.name(hostName: owner.hostName, deviceId: owner.deviceId, moduleId: owner.moduleId),
                    directory: configuration.directory,
                    holdsMessages: !replayed.entries.isEmpty)
            } catch {
                log.shutdown()
                throw .storageFailed("\(error)")
            }
        }
        state = NIOLockedValueBox(replayed)
        for id in replayed.entries.keys.sorted() { available.push(id) }
        if !recovery.isClean {
            logger.warning(
                "the cloud-to-device inbox was repaired on opening",
                metadata: [
                    "truncatedBytes": "\(recovery.truncatedBytes)",
                    "quarantined": "\(recovery.quarantined.map(\.path))",
                ])
        }
    }

    /// Applies one record read back at opening (a record that cannot be read is skipped).
    private static func replay(_ bytes: [UInt8], onto state: inout State) {
        var reader = ByteReader(bytes)
        guard let kind = reader.readByte() else { return }
        switch kind {
        case 10:
            guard let id = reader.readInteger(UInt64.self), let received = reader.readInteger(UInt64.self),
                let message = StoredMessageCodec.decode(&reader)
            else { return }
            state.entries[id] = Entry(
                message: message, size: InboxRecord.size(of: message), deliveryCount: 0,
                receivedAt: Date(timeIntervalSince1970: TimeInterval(received) / 1000))
            state.nextId = max(state.nextId, id + 1)
        case 11, 12:
            guard let id = reader.readInteger(UInt64.self), let count = reader.readInteger(UInt32.self) else { return }
            state.entries[id]?.deliveryCount = Int(count)
        case 13, 14:
            guard let id = reader.readInteger(UInt64.self) else { return }
            state.entries[id] = nil
        case 20:
            guard let nextId = reader.readInteger(UInt64.self), let count = reader.readInteger(UInt32.self) else {
                return
            }
            var entries: [UInt64: Entry] = [:]
            for _ in 0..<count {
                guard let id = reader.readInteger(UInt64.self), let delivered = reader.readInteger(UInt32.self),
                    let received = reader.readInteger(UInt64.self), let message = StoredMessageCodec.decode(&reader)
                else { return }
                entries[id] = Entry(
                    message: message, size: InboxRecord.size(of: message), deliveryCount: Int(delivered),
                    receivedAt: Date(timeIntervalSince1970: TimeInterval(received) / 1000))
            }
            state.entries = entries
            state.nextId = max(state.nextId, nextId)
        default:
            return
        }
    }

    // MARK: Receiving from the hub (the client's network thread)

    /// Takes a message from the hub; it is not on disk, and not deliverable, until
    /// ``commitStaged()``.
    func stage(_ message: Message) {
        state.withLockedValue { state in
            state.staged.append((state.nextId, message, Date()))
            state.nextId += 1
        }
    }

    /// Writes what was staged and waits until it is on disk: called before the client lets its
    /// acknowledgements go. Returns false when that failed: the acknowledgements must not go (the
    /// hub then sends the messages again).
    func commitStaged() -> Bool {
        let done = DispatchSemaphore(value: 0)
        let outcome = NIOLockedValueBox<Bool>(false)
        let staged = state.withLockedValue { state -> [(id: UInt64, message: Message, receivedAt: Date)] in
            defer { state.staged.removeAll() }
            guard !state.staged.isEmpty else { return [] }
            log.enqueueAppend(
                state.staged.map { InboxRecord.received(id: $0.id, message: $0.message, at: $0.receivedAt) }
            ) { result in
                outcome.withLockedValue { $0 = (try? result.get()) != nil }
                done.signal()
            }
            return state.staged
        }
        guard !staged.isEmpty else { return true }
        done.wait()
        guard outcome.withLockedValue({ $0 }) else {
            logger.error("cloud-to-device messages could not be stored; the hub will send them again")
            return false
        }
        var evicted: [UInt64] = []
        state.withLockedValue { state in
            for item in staged {
                let size = InboxRecord.size(of: item.message)
                state.entries[item.id] = Entry(
                    message: item.message, size: size, deliveryCount: 0, receivedAt: item.receivedAt)
                state.bytes += size
            }
            evicted = evictOverCapacity(&state)
        }
        for item in staged { available.push(item.id) }
        for item in staged where !evicted.contains(item.id) { arrivalsBroadcaster.yield(item.message) }
        if !evicted.isEmpty {
            available.removeAll { evicted.contains($0) }
            logger.warning(
                "the cloud-to-device inbox is full: its oldest waiting messages were dropped; poll the inbox",
                metadata: [
                    "dropped": "\(evicted.count)",
                    "capacity": "\(configuration.maximumMessages) messages, \(configuration.maximumBytes) bytes",
                ])
        }
        compactIfWorthIt()
        return true
    }

    /// Drops the oldest unlocked messages while over the bounds; returns their ids.
    private func evictOverCapacity(_ state: inout State) -> [UInt64] {
        var evicted: [UInt64] = []
        while state.entries.count > configuration.maximumMessages || state.bytes > configuration.maximumBytes,
            let oldest = state.entries.filter({ $0.value.lock == nil }).keys.min()
        {
            if let entry = state.entries.removeValue(forKey: oldest) { state.bytes -= entry.size }
            state.dropped += 1
            evicted.append(oldest)
        }
        if !evicted.isEmpty { log.enqueueAppend(evicted.map(InboxRecord.dropped(id:))) { _ in } }
        return evicted
    }

    // MARK: Receivers

    /// The oldest deliverable message, locked for ``InboxConfiguration/lockDuration``, its new
    /// delivery count on disk; nil if none came within `timeout`.
    public func receive(timeout: Duration) async -> Lease? {
        let deadline = ContinuousClock.now + timeout
        while let id = await available.pop(timeout: max(.zero, deadline - ContinuousClock.now)) {
            if let lease = await lock(id) { return lease }
            // Gone (dropped) between queueing and taking: the next one.
        }
        return nil
    }

    private func lock(_ id: UInt64) async -> Lease? {
        let token = UUID().lowercasedString
        let duration = configuration.lockDuration
        let until = Date().addingTimeInterval(TelemetryOutbox.seconds(duration))
        let lease: Lease? = await withCheckedContinuation { continuation in
            let pending = state.withLockedValue { state -> Lease? in
                guard var entry = state.entries[id] else { return nil }
                entry.deliveryCount += 1
                let expiry = Task { [weak self] in
                    try? await Task.sleep(for: duration)
                    guard !Task.isCancelled else { return }
                    _ = self?.release(token, uncounted: false)
                }
                entry.lock = (token, until, expiry)
                state.entries[id] = entry
                state.locks[token] = id
                let lease = Lease(
                    lockToken: token, message: entry.message, deliveryCount: entry.deliveryCount, lockedUntil: until)
                log.enqueueAppend([InboxRecord.leased(id: id, deliveryCount: entry.deliveryCount)]) { result in
                    continuation.resume(returning: (try? result.get()) == nil ? nil : lease)
                }
                return lease
            }
            if pending == nil { continuation.resume(returning: nil) }
        }
        if lease == nil, state.withLockedValue({ $0.entries[id] != nil }) {
            // The lease could not be recorded: give the message back, uncounted.
            _ = release(token, uncounted: true)
        }
        return lease
    }

    /// Removes a received message for good, once that is on disk.
    public func complete(_ lockToken: String) async throws(LeaseError) {
        let result: Result<Void, LeaseError> = await withCheckedContinuation { continuation in
            let found = state.withLockedValue { state -> Bool in
                guard let id = state.locks.removeValue(forKey: lockToken),
                    let entry = state.entries.removeValue(forKey: id)
                else { return false }
                state.bytes -= entry.size
                entry.lock?.expiry.cancel()
                log.enqueueAppend([InboxRecord.completed(id: id)]) { result in
                    continuation.resume(returning: result.map { _ in () }.mapError { .storageFailed("\($0)") })
                }
                return true
            }
            if !found { continuation.resume(returning: .failure(.unknownLockToken)) }
        }
        try result.get()
        compactIfWorthIt()
    }

    /// Makes a received message deliverable again at once (its count stays: the next delivery
    /// is one higher).
    public func abandon(_ lockToken: String) async throws(LeaseError) {
        guard let recorded = release(lockToken, uncounted: false) else { throw .unknownLockToken }
        try await recorded()
    }

    /// Takes back a message locked for a receiver that never got it (its connection closed):
    /// deliverable again at once, and not counted as delivered.
    public func giveBack(_ lockToken: String) async throws(LeaseError) {
        guard let recorded = release(lockToken, uncounted: true) else { throw .unknownLockToken }
        try await recorded()
    }

    /// Unlocks and requeues at the front; returns a wait for the record to be on disk.
    private func release(_ lockToken: String, uncounted: Bool) -> (@Sendable () async throws(LeaseError) -> Void)? {
        let written = NIOLockedValueBox<Result<Void, LeaseError>?>(nil)
        let signal = OneWaySignal()
        let released = state.withLockedValue { state -> (UInt64, Task<Void, Never>?)? in
            guard let id = state.locks.removeValue(forKey: lockToken), var entry = state.entries[id] else { return nil }
            let expiry = entry.lock?.expiry
            entry.lock = nil
            if uncounted { entry.deliveryCount -= 1 }
            state.entries[id] = entry
            log.enqueueAppend([InboxRecord.released(id: id, deliveryCount: entry.deliveryCount)]) { result in
                written.withLockedValue { $0 = result.map { _ in () }.mapError { .storageFailed("\($0)") } }
                signal.signal()
            }
            return (id, expiry)
        }
        guard let (id, expiry) = released else { return nil }
        expiry?.cancel()
        // Back at the front: it is older than anything that arrived since.
        available.push(id, atFront: true)
        return { () async throws(LeaseError) in
            await signal.wait()
            try (written.withLockedValue { $0 } ?? .success(())).get()
        }
    }

    /// Messages held (waiting or locked), how many were dropped for capacity, and their bytes.
    public var depth: Depth {
        state.withLockedValue { state in
            let locked = state.locks.count
            return Depth(
                waiting: state.entries.count - locked, locked: locked, dropped: state.dropped, bytes: state.bytes)
        }
    }

    // MARK: Compaction

    /// When the log holds much more than the live messages, writes them as one snapshot frame and
    /// lets everything before it go. The snapshot is queued under the state lock, so every
    /// record queued after it describes a change to it.
    private func compactIfWorthIt() {
        let liveBytes = state.withLockedValue { $0.bytes }
        guard log.diskBytes > 2 * liveBytes + (8 << 20) else { return }
        state.withLockedValue { state in
            guard !state.compacting else { return }
            state.compacting = true
            let snapshot = InboxRecord.snapshot(
                state.entries.map { ($0.key, $0.value.deliveryCount, $0.value.receivedAt, $0.value.message) },
                nextId: state.nextId)
            log.enqueueAppend([snapshot]) { [weak self] result in
                guard let self else { return }
                if case .success(let range) = result { log.discard(through: range.lowerBound - 1) }
                self.state.withLockedValue { $0.compacting = false }
            }
        }
    }

    /// Each message once it is kept (on disk and deliverable), for events and counting.
    public func arrivals() -> AsyncStream<Message> {
        arrivalsBroadcaster.stream()
    }

    /// Stops writing; what is stored stays for the next opening.
    public func close() {
        log.shutdown()
        arrivalsBroadcaster.finish()
    }
}

/// The inbox's records on disk (one DurableLog frame each):
///
///     10 received   id u64, received u64 (ms since 1970), the message (StoredMessageCodec)
///     11 leased     id u64, delivery count u32
///     12 released   id u64, delivery count u32
///     13 completed  id u64
///     14 dropped    id u64
///     20 snapshot   next id u64, count u32, then per message: id u64, delivery count u32,
///                   received u64, the message
enum InboxRecord {
    static func received(id: UInt64, message: Message, at date: Date) -> [UInt8] {
        var bytes: [UInt8] = [10]
        StoredMessageCodec.appendInteger(id, to: &bytes)
        StoredMessageCodec.appendInteger(milliseconds(date), to: &bytes)
        StoredMessageCodec.encode(message, into: &bytes)
        return bytes
    }

    static func leased(id: UInt64, deliveryCount: Int) -> [UInt8] {
        counted(11, id: id, deliveryCount: deliveryCount)
    }

    static func released(id: UInt64, deliveryCount: Int) -> [UInt8] {
        counted(12, id: id, deliveryCount: deliveryCount)
    }

    static func completed(id: UInt64) -> [UInt8] {
        var bytes: [UInt8] = [13]
        StoredMessageCodec.appendInteger(id, to: &bytes)
        return bytes
    }

    static func dropped(id: UInt64) -> [UInt8] {
        var bytes: [UInt8] = [14]
        StoredMessageCodec.appendInteger(id, to: &bytes)
        return bytes
    }

    static func snapshot(_ entries: [(UInt64, Int, Date, Message)], nextId: UInt64) -> [UInt8] {
        var bytes: [UInt8] = [20]
        StoredMessageCodec.appendInteger(nextId, to: &bytes)
        StoredMessageCodec.appendInteger(UInt32(entries.count), to: &bytes)
        for (id, count, date, message) in entries.sorted(by: { $0.0 < $1.0 }) {
            StoredMessageCodec.appendInteger(id, to: &bytes)
            StoredMessageCodec.appendInteger(UInt32(max(0, count)), to: &bytes)
            StoredMessageCodec.appendInteger(milliseconds(date), to: &bytes)
            StoredMessageCodec.encode(message, into: &bytes)
        }
        return bytes
    }

    /// What a message counts against the inbox's byte bound.
    static func size(of message: Message) -> Int {
        message.payload.count + message.properties.reduce(64) { $0 + $1.key.utf8.count + $1.value.utf8.count }
    }

    private static func counted(_ kind: UInt8, id: UInt64, deliveryCount: Int) -> [UInt8] {
        var bytes: [UInt8] = [kind]
        StoredMessageCodec.appendInteger(id, to: &bytes)
        StoredMessageCodec.appendInteger(UInt32(max(0, deliveryCount)), to: &bytes)
        return bytes
    }

    private static func milliseconds(_ date: Date) -> UInt64 {
        UInt64(max(0, date.timeIntervalSince1970 * 1000))
    }

}
