import Foundation
import Testing

@testable import Sidecar

@Suite struct StateDirectoryTests {
    static func scratch() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("state-\(UUID().uuidString)").path
    }

    @Test func itIsCreatedPrivateAndHeldByOneOwnerAtATime() throws {
        let root = Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let path = root + "/a/state"
        var first: StateDirectory? = try StateDirectory(path: path)
        for directory in [root + "/a", path] {
            let mode = try #require(FileManager.default.attributesOfItem(atPath: directory)[.posixPermissions] as? Int)
            #expect(mode == 0o700, "\(directory)")
        }
        let refusal = #expect(throws: StateDirectory.Failure.self) { try StateDirectory(path: path) }
        #expect(refusal?.description.contains("in use by another iothub-sidecar") == true)
        #expect(refusal?.description.contains(path) == true)
        #expect(first?.outboxPath == path + "/outbox")
        first = nil
        // The lock goes with its owner.
        _ = try StateDirectory(path: path)
    }

    @Test func aFileInTheWayIsNamed() throws {
        let path = Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = FileManager.default.createFile(atPath: path, contents: Data("x".utf8))
        let refusal = #expect(throws: StateDirectory.Failure.self) { try StateDirectory(path: path) }
        #expect(refusal?.description.contains("is not a directory") == true)
    }

    @Test func theDefaultFollowsXDG() {
        #expect(
            StateDirectory.defaultPath(environment: ["XDG_STATE_HOME": "/x/state", "HOME": "/home/u"])
                == "/x/state/iothub-sidecar")
        #expect(
            StateDirectory.defaultPath(environment: ["XDG_STATE_HOME": "relative", "HOME": "/home/u"])
                == "/home/u/.local/state/iothub-sidecar")
        #expect(StateDirectory.defaultPath(environment: ["HOME": "/home/u"]) == "/home/u/.local/state/iothub-sidecar")
    }
}
