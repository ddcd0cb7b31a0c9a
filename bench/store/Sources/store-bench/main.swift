import CSQLite
import Dispatch
import DurableLog
import Foundation
import NIOConcurrencyHelpers

// Durable appends from 64 concurrent writers, for a few seconds each, then a drain (read in order
// and delete) of everything written: DurableLog against SQLite on the same disk, in one run.
// The outbox stores one request (one message, or a batch) as one frame: atomic, one row set.

let seconds = Double(ProcessInfo.processInfo.environment["STORE_BENCH_SECONDS"] ?? "5") ?? 5
let writers = 64
let message = [UInt8](repeating: 0x61, count: 200)

protocol Store: Sendable {
    var name: String { get }
    /// Stores the messages of one request atomically and durably.
    func append(_ messages: [[UInt8]]) async throws
    /// Reads everything in order and deletes it as it goes; returns how many messages it read.
    func drain() throws -> Int
    var syncs: Int { get }
    func close()
}

/// One frame per request: the messages, each with a 4-byte length.
func frame(_ messages: [[UInt8]]) -> [UInt8] {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(messages.reduce(0) { $0 + 4 + $1.count })
    for message in messages {
        withUnsafeBytes(of: UInt32(message.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: message)
    }
    return bytes
}

final class LogStore: Store {
    let name = "DurableLog"
    let log: DurableLog

    init(directory: String) throws {
        log = try DurableLog(directory: directory)
    }

    func append(_ messages: [[UInt8]]) async throws {
        _ = try await log.append([frame(messages)])
    }

    func drain() throws -> Int {
        var cursor = log.discardedThrough
        var count = 0
        while true {
            let frames = try log.read(after: cursor, maximumBytes: 1 << 20)
            guard let last = frames.last else { return count }
            for frame in frames {
                var offset = 0
                while offset < frame.payload.count {
                    let length = frame.payload.withUnsafeBytes {
                        Int($0.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian)
                    }
                    offset += 4 + length
                    count += 1
                }
            }
            cursor = last.sequence
            log.discard(through: cursor)
        }
    }

    var syncs: Int { log.syncCount }
    func close() { log.shutdown() }
}

/// SQLite in WAL mode with synchronous=FULL (a commit is synced: durable against power loss),
/// one row per message, one transaction per request. With `groupCommit` a writer thread commits
/// every queued request in one transaction, as DurableLog does; without, each request commits
/// on its own (the usual use).
final class SQLiteStore: Store, @unchecked Sendable {
    // @unchecked: `database` is used only under `lock` (or by the writer thread alone).
    let name: String
    private let database: OpaquePointer
    private let lock = NIOLock()
    private let groupCommit: Bool
    private let pending = NIOLockedValueBox<[([[UInt8]], CheckedContinuation<Void, Never>)]>([])
    private let wake = DispatchSemaphore(value: 0)
    private let syncCount = NIOLockedValueBox(0)
    private let stopping = NIOLockedValueBox(false)
    private let stopped = DispatchSemaphore(value: 0)

    init(path: String, groupCommit: Bool) throws {
        self.groupCommit = groupCommit
        name = groupCommit ? "SQLite WAL, group commit" : "SQLite WAL, commit per request"
        var handle: OpaquePointer?
        guard sqlite3_open(path, &handle) == SQLITE_OK, let handle else { throw Failure("cannot open \(path)") }
        database = handle
        for statement in [
            "PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, body BLOB NOT NULL)",
        ] {
            guard sqlite3_exec(database, statement, nil, nil, nil) == SQLITE_OK else {
                throw Failure(String(cString: sqlite3_errmsg(database)))
            }
        }
        if groupCommit {
            let thread = Thread { [self] in
                runWriter()
                stopped.signal()
            }
            thread.start()
        }
    }

    func append(_ messages: [[UInt8]]) async throws {
        if groupCommit {
            await withCheckedContinuation { continuation in
                pending.withLockedValue { $0.append((messages, continuation)) }
                wake.signal()
            }
        } else {
            lock.withLock { commit([messages]) }
        }
    }

    private func runWriter() {
        while true {
            wake.wait()
            let group = pending.withLockedValue { pending in
                defer { pending.removeAll() }
                return pending
            }
            if group.isEmpty {
                if stopping.withLockedValue({ $0 }) { return }
                continue
            }
            commit(group.map(\.0))
            group.forEach { $0.1.resume() }
        }
    }

    private func commit(_ requests: [[[UInt8]]]) {
        sqlite3_exec(database, "BEGIN", nil, nil, nil)
        var statement: OpaquePointer?
        sqlite3_prepare_v2(database, "INSERT INTO outbox (body) VALUES (?)", -1, &statement, nil)
        for messages in requests {
            for message in messages {
                message.withUnsafeBytes { bytes in
                    _ = sqlite3_bind_blob(
                        statement, 1, bytes.baseAddress, Int32(bytes.count), iothub_sqlite_transient())
                }
                sqlite3_step(statement)
                sqlite3_reset(statement)
            }
        }
        sqlite3_finalize(statement)
        sqlite3_exec(database, "COMMIT", nil, nil, nil)
        syncCount.withLockedValue { $0 += 1 }
    }

    func drain() throws -> Int {
        try lock.withLock {
            var count = 0
            var last: Int64 = 0
            var select: OpaquePointer?
            sqlite3_prepare_v2(
                database, "SELECT id, body FROM outbox WHERE id > ? ORDER BY id LIMIT 5000", -1, &select, nil)
            defer { sqlite3_finalize(select) }
            while true {
                sqlite3_bind_int64(select, 1, last)
                var rows = 0
                while sqlite3_step(select) == SQLITE_ROW {
                    last = sqlite3_column_int64(select, 0)
                    _ = sqlite3_column_blob(select, 1)
                    rows += 1
                }
                sqlite3_reset(select)
                guard rows > 0 else { return count }
                count += rows
                guard sqlite3_exec(database, "DELETE FROM outbox WHERE id <= \(last)", nil, nil, nil) == SQLITE_OK
                else {
                    throw Failure(String(cString: sqlite3_errmsg(database)))
                }
            }
        }
    }

    var syncs: Int { syncCount.withLockedValue { $0 } }

    func close() {
        if groupCommit {
            stopping.withLockedValue { $0 = true }
            wake.signal()
            stopped.wait()
        }
        sqlite3_close(database)
    }
}

struct Failure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Appends requests of `batch` messages from 64 writers for `seconds`: messages per second.
func measureAppends(_ store: some Store, batch: Int) async -> (messagesPerSecond: Double, syncsPerSecond: Double) {
    let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    let start = ContinuousClock.now
    let syncsBefore = store.syncs
    let count = await withTaskGroup(of: Int.self) { group in
        for _ in 0..<writers {
            group.addTask {
                var written = 0
                let messages = Array(repeating: message, count: batch)
                while ContinuousClock.now < deadline {
                    do { try await store.append(messages) } catch { return written }
                    written += batch
                }
                return written
            }
        }
        return await group.reduce(0, +)
    }
    let elapsed = ContinuousClock.now - start
    let time = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    return (Double(count) / time, Double(store.syncs - syncsBefore) / time)
}

let base = FileManager.default.currentDirectoryPath + "/.build-store-bench-data"
try? FileManager.default.removeItem(atPath: base)
try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: base) }

print("| store | shape | messages/s | syncs/s | drain of everything written (messages/s) |")
print("|---|---|---|---|---|")
for batch in [1, 100] {
    let stores: [any Store] = [
        try LogStore(directory: base + "/log-\(batch)"),
        try SQLiteStore(path: base + "/group-\(batch).sqlite", groupCommit: true),
        try SQLiteStore(path: base + "/plain-\(batch).sqlite", groupCommit: false),
    ]
    for store in stores {
        let (rate, syncs) = await measureAppends(store, batch: batch)
        let drainStart = ContinuousClock.now
        let drained = try store.drain()
        let drainTime = ContinuousClock.now - drainStart
        let drainSeconds = Double(drainTime.components.seconds) + Double(drainTime.components.attoseconds) / 1e18
        store.close()
        let shape = batch == 1 ? "single messages, 64 writers" : "batches of \(batch), 64 writers"
        print("| \(store.name) | \(shape) | \(Int(rate)) | \(Int(syncs)) | \(Int(Double(drained) / drainSeconds)) |")
    }
}
