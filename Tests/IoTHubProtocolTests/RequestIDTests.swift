import Foundation
import IoTHubProtocol
import Testing

@Suite struct RequestIDTests {
    @Test func aLowerCaseUUIDIsTheUUIDInLowerCase() throws {
        for _ in 0..<1000 {
            let uuid = UUID()
            #expect(uuid.lowercasedString == uuid.uuidString.lowercased())
        }
        let known = try #require(UUID(uuidString: "0F8FAD5B-D9CB-469F-A165-70867728950E"))
        #expect(known.lowercasedString == "0f8fad5b-d9cb-469f-a165-70867728950e")
    }

    @Test func requestIdsAreFreshLowerCaseUUIDs() {
        let ids = (0..<100).map { _ in RequestID.make() }
        #expect(Set(ids).count == 100)
        #expect(ids.allSatisfy { UUID(uuidString: $0)?.lowercasedString == $0 })
    }
}
