import Foundation
import IoTHubProtocol
import Testing

@Suite struct TwinTests {
    @Test func parsesAndEncodesAGetResponse() throws {
        let body = Data(#"{"desired":{"fan":{"speed":3},"$version":4},"reported":{"ok":true,"$version":9}}"#.utf8)
        let twin = try Twin(parsing: body)
        #expect(twin.desired.version == 4)
        #expect(twin.desired.properties == ["fan": ["speed": 3]])
        #expect(twin.reported.version == 9)
        #expect(twin.reported.properties == ["ok": true])
        #expect(try Twin(parsing: twin.encoded()) == twin)
        #expect(try JSONDecoder().decode(Twin.self, from: body) == twin)
        #expect(try JSONDecoder().decode(Twin.self, from: JSONEncoder().encode(twin)) == twin)
    }

    @Test func rejectsTwinsWithoutVersions() {
        #expect(throws: IoTHubError.valueError(field: "desired", reason: "has no integer $version")) {
            try Twin(parsing: Data(#"{"desired":{},"reported":{"$version":1}}"#.utf8))
        }
        #expect(throws: IoTHubError.valueError(field: "twin", reason: "is not a JSON object")) {
            try Twin(parsing: Data("[]".utf8))
        }
    }

    @Test func applyingAPatchMergesAndBumpsTheVersion() {
        var reported = TwinProperties(properties: ["a": 1, "b": ["c": 2, "d": 3]], version: 5)
        reported.apply(patch: ["a": nil, "b": ["c": nil, "e": 4], "$version": 99])
        #expect(reported.properties == ["b": ["d": 3, "e": 4]])
        #expect(reported.version == 6)
        #expect(reported.json == ["b": ["d": 3, "e": 4], "$version": 6])
    }
}
