import AsyncPrimitives
import Foundation
import NIOConcurrencyHelpers

/// An append-only log with sequence numbers and bounded memory, read through cursors: what the
/// hub keeps of telemetry and of file-upload notifications.
///
/// The oldest entries are dropped when either `capacity` entries or `byteCapacity` bytes are
/// exceeded; a reader whose cursor fell behind learns how many it missed.
final class EventLog<Entry: Sendable>: Sendable {
    struct Page: Sendable {
        var entries: [(sequenceNumber: UInt64, entry: Entry)]
        /// The cursor to pass as `after` next time.
        var next: UInt64
        /// Entries after the requested cursor that were already dropped.
        var dropped: UInt64
    }

    private struct State {
        var entries: [(sequenceNumber: UInt64, entry: Entry, size: Int)] = []
        var head = 0
        var bytes = 0
        var lastSequenceNumber: UInt64 = 0
    }

    let capacity: Int
    let byteCapacity: Int
    private let state = NIOLockedValueBox(State())
    private let changes = ChangeSignal()

    init(capacity: Int, byteCapacity: Int) {
        self.capacity = max(1, capacity)
        self.byteCapacity = max(1, byteCapacity)
    }

    /// Appends an entry and returns its sequence number (1, 2, 3, …).
    @discardableResult
    func append(_ entry: Entry, size: Int) -> UInt64 {
        let sequenceNumber = state.withLockedValue { state -> UInt64 in
            state.lastSequenceNumber += 1
            state.entries.append((state.lastSequenceNumber, entry, size))
            state.bytes += size
            while state.entries.count - state.head > capacity
                || (state.bytes > byteCapacity && state.entries.count - state.head > 1)
            {
                state.bytes -= state.entries[state.head].size
                state.head += 1
            }
            // Compact once the dropped prefix dominates, so memory stays proportional to what is kept.
            if state.head > 1024, state.head * 2 > state.entries.count {
                state.entries.removeFirst(state.head)
                state.head = 0
            }
            return state.lastSequenceNumber
        }
        changes.signal()
        return sequenceNumber
    }

    /// The sequence number of the newest entry (0 when empty).
    var lastSequenceNumber: UInt64 {
        state.withLockedValue { $0.lastSequenceNumber }
    }

    /// Entries after `cursor` that satisfy `filter`, at most `limit`; immediately.
    func read(after cursor: UInt64, limit: Int, where filter: (Entry) -> Bool = { _ in true }) -> Page {
        state.withLockedValue { state in
            var result: [(UInt64, Entry)] = []
            var next = cursor
            let live = state.entries[state.head...]
            let oldest = live.first?.sequenceNumber ?? state.lastSequenceNumber + 1
            let dropped = oldest > cursor + 1 ? oldest - cursor - 1 : 0
            // Binary search for the first entry after the cursor.
            var low = state.head
            var high = state.entries.count
            while low < high {
                let middle = (low + high) / 2
                if state.entries[middle].sequenceNumber <= cursor { low = middle + 1 } else { high = middle }
            }
            var index = low
            while index < state.entries.count, result.count < limit {
                let item = state.entries[index]
                if filter(item.entry) { result.append((item.sequenceNumber, item.entry)) }
                next = item.sequenceNumber
                index += 1
            }
            if result.count < limit { next = max(next, state.lastSequenceNumber) }
            return Page(entries: result, next: max(next, cursor), dropped: dropped)
        }
    }

    /// Like ``read(after:limit:where:)`` but waits up to `timeout` for a first entry.
    func poll(
        after cursor: UInt64, limit: Int, timeout: Duration, where filter: @Sendable (Entry) -> Bool = { _ in true }
    ) async -> Page {
        let deadline = ContinuousClock.now + timeout
        var cursor = cursor
        var dropped: UInt64 = 0
        while true {
            let generation = changes.generation
            let page = read(after: cursor, limit: limit, where: filter)
            dropped += page.dropped
            if !page.entries.isEmpty || ContinuousClock.now >= deadline || Task.isCancelled {
                return Page(entries: page.entries, next: page.next, dropped: dropped)
            }
            cursor = page.next
            await changes.wait(afterGeneration: generation, timeout: deadline - ContinuousClock.now)
        }
    }
}
