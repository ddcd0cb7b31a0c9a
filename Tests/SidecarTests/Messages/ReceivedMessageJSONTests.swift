import Foundation
import HTTPTypes
import IoTHubProtocol
import Testing

@testable import Sidecar

@Suite struct ReceivedMessageJSONTests {
    private func accepts(_ values: [String]) -> Bool {
        var headers = HTTPFields()
        for value in values { headers.append(HTTPField(name: .accept, value: value)) }
        return ReceivedMessageJSON.isAccepted(by: headers)
    }

    private func value(_ name: String, in headers: HTTPFields) -> String? {
        HTTPField.Name(name).flatMap { headers[$0] }
    }

    @Test func jsonIsGivenWhenAcceptNamesIt() {
        #expect(accepts(["application/json"]))
        #expect(accepts(["APPLICATION/JSON"]))
        #expect(accepts(["text/plain;q=0.5, application/json;q=0.9"]))
        #expect(accepts(["text/plain", "application/json"]))
        #expect(!accepts([]))
        #expect(!accepts(["*/*"]))
        #expect(!accepts(["application/*"]))
        #expect(!accepts(["application/json;q=0"]))
        #expect(!accepts(["application/json-seq"]))
    }

    @Test func everyPropertyIsCarriedExactly() {
        let message = Message(
            payload: Data("x".utf8), messageId: "m\u{1}", correlationId: "c", userId: "u", contentType: "text/plain",
            contentEncoding: "utf-8", expiryTimeUTC: "2099-01-01T00:00:00Z",
            properties: ["name with space": " v\t", "été": "a\u{0}b"], to: "/devices/d/messages/deviceBound",
            ack: "full")
        let members = ReceivedMessageJSON.propertyMembers(of: message)
        #expect(
            members == [
                "messageId": "m\u{1}", "correlationId": "c", "userId": "u", "contentType": "text/plain",
                "contentEncoding": "utf-8", "expiryTimeUtc": "2099-01-01T00:00:00Z",
                "to": "/devices/d/messages/deviceBound", "ack": "full",
                "properties": ["name with space": " v\t", "été": "a\u{0}b"],
            ])
    }

    /// The header form leaves out what headers cannot carry exactly, and counts it.
    @Test func theHeaderFormCountsWhatItLeavesOut() {
        let message = Message(
            messageId: "m\u{1}", correlationId: "c",
            properties: ["name with space": "x", "été": "y", "pad": " v", "ctl": "a\u{7f}b", "plain": "café ok"])
        let headers = MessageMapping.headers(for: message)
        #expect(headers[MessageMapping.inexactPropertiesField] == "5")
        #expect(value("iothub-app-plain", in: headers) == "café ok")
        #expect(value("iothub-correlationid", in: headers) == "c")
        #expect(value("iothub-messageid", in: headers) == nil)
        #expect(headers.count == 3)
        #expect(MessageMapping.headers(for: Message(messageId: "m"))[MessageMapping.inexactPropertiesField] == nil)
    }
}
