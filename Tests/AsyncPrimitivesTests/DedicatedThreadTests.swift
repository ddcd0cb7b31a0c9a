import AsyncPrimitives
import Foundation
import Testing

/// The named threads the log's writer and the MQTT network thread run on.
@Suite struct DedicatedThreadTests {
    @Test func aDedicatedThreadRunsItsBodyUnderItsName() async {
        let name = await withCheckedContinuation { (continuation: CheckedContinuation<String, Never>) in
            DedicatedThread.start(name: "dedicated-test-thread-name") {
                let comm = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
                continuation.resume(returning: comm.trimmingCharacters(in: .newlines))
            }
        }
        #expect(name == "dedicated-test-")
    }
}
