import FoundationEssentials
import Glibc
import NIOConcurrencyHelpers

/// The bytes of a streamed upload, from the request handler (writer, async) to libcurl's read
/// callback (reader, on the transfer's dispatch thread). At most ``capacity`` bytes wait in
/// between: a writer beyond that suspends until the reader catches up.
///
/// `@unchecked Sendable`: every stored `var` (`chunks`, `offset`, `buffered`, the three flags and
/// `waitingWriter`) is read and written only while `condition` is locked — in `locked(_:)` or
/// between the `lock(whenValue:)` and `unlock(withValue:)` of `read(into:)` — and
/// `waitingWriter` is resumed only after the lock is released; `capacity` is a constant;
/// NIO's `ConditionLock` (a pthread mutex and condition) is made to be used from several threads.
final class UploadPipe: @unchecked Sendable {
    /// Its value says whether the reader has something to do (``readerMayGoOn``), set at every
    /// unlock: `read(into:)` waits for `true`.
    private let condition = ConditionLock(value: false)
    private var chunks: [Data] = []
    private var offset = 0
    private var buffered = 0
    private var writingFinished = false
    private var aborted = false
    private var readingClosed = false
    private var waitingWriter: CheckedContinuation<Void, Never>?
    let capacity: Int

    init(capacity: Int = 1 << 20) {
        self.capacity = capacity
    }

    /// Adds bytes; returns false when the reader is gone (the transfer ended).
    func write(_ data: Data) async -> Bool {
        let full: Bool = locked {
            guard !readingClosed else { return false }
            chunks.append(data)
            buffered += data.count
            return buffered > capacity
        }
        if full {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow: Bool = locked {
                    if readingClosed || buffered <= capacity { return true }
                    waitingWriter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        }
        return locked { !readingClosed }
    }

    func finishWriting() {
        locked {
            writingFinished = true
        }
    }

    func abort() {
        locked {
            aborted = true
        }
    }

    /// The reader ended (the transfer finished or failed): writers stop waiting.
    func closeReadingEnd() {
        let writer: CheckedContinuation<Void, Never>? = locked {
            readingClosed = true
            defer { waitingWriter = nil }
            return waitingWriter
        }
        writer?.resume()
    }

    /// Copies up to `buffer.count` bytes, blocking until some are there; 0 at the end, nil
    /// when the writer aborted.
    func read(into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        condition.lock(whenValue: true)
        if aborted {
            condition.unlock(withValue: readerMayGoOn)
            return nil
        }
        var copied = 0
        while copied < buffer.count, let first = chunks.first {
            let take = min(buffer.count - copied, first.count - offset)
            first.withUnsafeBytes { bytes in
                if let base = bytes.baseAddress, let target = buffer.baseAddress {
                    memcpy(target + copied, base + offset, take)
                }
            }
            copied += take
            offset += take
            if offset == first.count {
                chunks.removeFirst()
                offset = 0
            }
        }
        buffered -= copied
        var writer: CheckedContinuation<Void, Never>?
        if buffered <= capacity {
            writer = waitingWriter
            waitingWriter = nil
        }
        condition.unlock(withValue: readerMayGoOn)
        writer?.resume()
        return copied
    }

    /// Whether `read(into:)` has something to do: bytes, the end, or the abort. Read under the lock.
    private var readerMayGoOn: Bool { !chunks.isEmpty || writingFinished || aborted }

    private func locked<T>(_ body: () -> T) -> T {
        condition.lock()
        defer { condition.unlock(withValue: readerMayGoOn) }
        return body()
    }
}
