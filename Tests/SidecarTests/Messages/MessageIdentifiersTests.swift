import Foundation
import Testing

@testable import Sidecar

@Suite struct MessageIdentifiersTests {
    @Test func idsAreLowerCaseVersion4UUIDsAndDoNotRepeat() throws {
        let ids = (0..<10_000).map { _ in MessageIdentifiers.next() }
        #expect(Set(ids).count == ids.count)
        for id in ids.prefix(500) {
            let uuid = try #require(UUID(uuidString: id), "\(id)")
            #expect(id == uuid.uuidString.lowercased())
            #expect(uuid.uuid.6 >> 4 == 4, "version 4")
            #expect(uuid.uuid.8 >> 6 == 0b10, "RFC 4122 variant")
        }
    }

    @Test func formatting() {
        let bytes: [UInt8] = [
            0x1b, 0x4e, 0x28, 0xba, 0x2f, 0xa1, 0x41, 0xd2, 0x88, 0x3f, 0x00, 0x16, 0xd3, 0xcc, 0xa4, 0x27,
        ]
        #expect(bytes.withUnsafeBytes { MessageIdentifiers.format($0) } == "1b4e28ba-2fa1-41d2-883f-0016d3cca427")
    }

    @Test func concurrentCallersGetDistinctIds() async {
        let ids = await withTaskGroup(of: [String].self) { group in
            for _ in 0..<8 { group.addTask { (0..<2_000).map { _ in MessageIdentifiers.next() } } }
            return await group.reduce(into: [String]()) { $0 += $1 }
        }
        #expect(Set(ids).count == 16_000)
    }
}
