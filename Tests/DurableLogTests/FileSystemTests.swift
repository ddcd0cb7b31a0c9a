import Foundation
import Testing

@testable import DurableLog

/// The path arithmetic the log does without Foundation's `NSString`.
@Suite struct FileSystemTests {
    @Test(arguments: [
        ("/a/b", "/a"), ("/a/b/", "/a"), ("/a", "/"), ("/", "/"), ("a/b", "a"), ("a", ""), ("", ""),
    ])
    func parentDirectoryDropsTheLastComponent(path: String, parent: String) {
        #expect(FileSystem.parentDirectory(of: path) == parent)
    }

    @Test func lastComponentIsWhatFollowsTheLastSlash() {
        #expect(FileSystem.lastComponent(of: "/state/outbox/00000000000000000001.log") == "00000000000000000001.log")
        #expect(FileSystem.lastComponent(of: "segment.log") == "segment.log")
        #expect(FileSystem.lastComponent(of: "/a/b/") == "b")
    }

    @Test func theWriterThreadRunsItsBodyUnderItsName() async {
        let name = await withCheckedContinuation { (continuation: CheckedContinuation<String, Never>) in
            WriterThread.start(name: "durable-log-test-thread-name") {
                let comm = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
                continuation.resume(returning: comm.trimmingCharacters(in: .newlines))
            }
        }
        #expect(name == "durable-log-tes")
    }
}
