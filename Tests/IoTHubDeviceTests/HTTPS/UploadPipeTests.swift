import Dispatch
import Foundation
import Synchronization
import Testing

@testable import IoTHubDevice

/// The hand-over between a streamed upload's writer (a request handler) and libcurl's reader (a
/// thread that blocks in `read(into:)`).
@Suite struct UploadPipeTests {
    /// Reads on a thread of its own until the end (or the abort): what it read, or nil.
    private static func readAll(_ pipe: UploadPipe, chunk: Int = 7) async -> [UInt8]? {
        await withCheckedContinuation { (continuation: CheckedContinuation<[UInt8]?, Never>) in
            Thread.detachNewThread {
                var received: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: chunk)
                while true {
                    let count = buffer.withUnsafeMutableBytes { pipe.read(into: $0) }
                    guard let count else { return continuation.resume(returning: nil) }
                    if count == 0 { break }
                    received += buffer[..<count]
                }
                pipe.closeReadingEnd()
                continuation.resume(returning: received)
            }
        }
    }

    @Test func aReaderWaitsForBytesAndGetsThemInOrderUpToTheEnd() async {
        let pipe = UploadPipe(capacity: 16)
        async let received = Self.readAll(pipe)
        var sent: [UInt8] = []
        for index in 0..<50 {
            let part = [UInt8](repeating: UInt8(index), count: index % 5 + 1)
            sent += part
            #expect(await pipe.write(Data(part)))
        }
        pipe.finishWriting()
        #expect(await received == sent)
    }

    @Test func aWriterBeyondTheCapacityWaitsUntilTheReaderCatchesUp() async {
        let pipe = UploadPipe(capacity: 4)
        let returned = Mutex(false)
        let writer = Task {
            let accepted = await pipe.write(Data([1, 2, 3, 4, 5]))
            returned.withLock { $0 = true }
            return accepted
        }
        // Nobody reads: the write stays suspended.
        try? await Task.sleep(for: .milliseconds(100))
        #expect(returned.withLock { $0 } == false)
        var buffer = [UInt8](repeating: 0, count: 8)
        #expect(buffer.withUnsafeMutableBytes { pipe.read(into: $0) } == 5)
        #expect(await writer.value)
        #expect(Array(buffer[..<5]) == [1, 2, 3, 4, 5])
    }

    @Test func anAbortEndsTheReadWithNil() async {
        let pipe = UploadPipe()
        async let received = Self.readAll(pipe)
        #expect(await pipe.write(Data([1])))
        pipe.abort()
        #expect(await received == nil)
    }

    @Test func whenTheReaderIsGoneAWaitingWriterIsToldSo() async {
        let pipe = UploadPipe(capacity: 1)
        let writer = Task { await pipe.write(Data([1, 2])) }
        try? await Task.sleep(for: .milliseconds(50))
        pipe.closeReadingEnd()
        #expect(await writer.value == false)
        #expect(await pipe.write(Data([3])) == false)
    }
}
