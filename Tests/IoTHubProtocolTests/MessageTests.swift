import Foundation
import IoTHubProtocol
import Testing

@Suite struct MessageTests {
    @Test func telemetryBagPutsSystemPropertiesInTheSDKOrderThenSortedApplicationProperties() {
        let message = Message(
            payload: Data("{}".utf8), messageId: "m1", correlationId: "c1", userId: "u1",
            contentType: "application/json", contentEncoding: "utf-8",
            expiryTimeUTC: "2030-01-01T00:00:00", outputName: "out", interfaceId: "urn:x",
            properties: ["zeta": "z", "Alpha": "A", "alpha": "a", "é": "e", "b c": "b c"])
        // Python: system properties via urlencode(quote_via=quote), custom properties sorted.
        #expect(
            message.telemetryPropertyBag.encoded
                == [
                    "%24.on=out", "%24.mid=m1", "%24.cid=c1", "%24.uid=u1", "%24.ct=application%2Fjson",
                    "%24.ce=utf-8", "%24.ifid=urn%3Ax", "%24.exp=2030-01-01T00%3A00%3A00",
                    "Alpha=A", "alpha=a", "b%20c=b%20c", "zeta=z", "%C3%A9=e",
                ].joined(separator: "&"))
    }

    /// The Python SDK's `set_as_security_message` sets `$.ifid` to the security agent's
    /// interface id (azure-iot-device's `constant.SECURITY_MESSAGE_INTERFACE_ID`).
    @Test func aSecurityMessageCarriesTheSecurityAgentInterfaceId() {
        var message = Message(payload: Data("event".utf8))
        #expect(!message.isSecurityMessage)
        message.setAsSecurityMessage()
        #expect(message.isSecurityMessage)
        #expect(message.interfaceId == "urn:azureiot:Security:SecurityAgent:1")
        #expect(message.telemetryPropertyBag.encoded == "%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1")
        #expect(!Message(interfaceId: "urn:x").isSecurityMessage)
    }

    @Test func emptyAndMissingSystemPropertiesAreLeftOut() {
        let message = Message(messageId: "", contentType: "text/plain")
        #expect(message.telemetryPropertyBag.encoded == "%24.ct=text%2Fplain")
        #expect(Message().telemetryPropertyBag.encoded == "")
    }

    @Test func rebuildsAReceivedCloudToDeviceMessage() {
        let bag = PropertyBag(
            decoding:
                "%24.mid=7&%24.to=%2Fdevices%2Fd%2Fmessages%2FdeviceBound&%24.cid=c&%24.uid=u&%24.ct=text%2Fplain&%24.ce=utf-8&%24.exp=2030&iothub-ack=full&color=blue&flag"
        )
        let message = Message(payload: Data("hi".utf8), propertyBag: bag)
        #expect(message.messageId == "7")
        #expect(message.to == "/devices/d/messages/deviceBound")
        #expect(message.correlationId == "c")
        #expect(message.userId == "u")
        #expect(message.contentType == "text/plain")
        #expect(message.contentEncoding == "utf-8")
        #expect(message.expiryTimeUTC == "2030")
        #expect(message.ack == "full")
        #expect(message.properties == ["color": "blue", "flag": ""])
        #expect(Message(payload: message.payload, propertyBag: message.cloudToDevicePropertyBag) == message)
    }

    @Test func sizeCountsBodyAndPropertiesInUTF8() {
        let message = Message(
            payload: Data(count: 100), messageId: "abc", contentType: "é", properties: ["k": "vv", "ü": ""])
        #expect(message.size == 100 + 3 + 2 + (1 + 2) + (2 + 0))
        // Every system property a device sends counts, and nothing else does.
        let full = Message(
            payload: Data(count: 1), messageId: "m", correlationId: "cc", userId: "uuu", contentType: "t",
            contentEncoding: "e", expiryTimeUTC: "x", outputName: "o", interfaceId: "i", properties: ["p": "q"],
            to: "not counted", ack: "full", inputName: "not counted")
        let bag = full.telemetryPropertyBag.entries
        #expect(full.size == 1 + bag.reduce(0) { $0 + ($1.value ?? "").utf8.count } + "p".utf8.count)
    }

    @Test func theLimitIsInclusive() throws {
        let atLimit = Message(payload: Data(count: Message.maximumSize - 2), properties: ["a": "b"])
        #expect(atLimit.size == Message.maximumSize)
        try atLimit.validateSize()

        let overLimit = Message(payload: Data(count: Message.maximumSize - 1), properties: ["a": "b"])
        #expect(throws: IoTHubError.messageTooLarge(size: Message.maximumSize + 1, limit: Message.maximumSize)) {
            try overLimit.validateSize()
        }
        #expect(throws: IoTHubError.messageTooLarge(size: Message.maximumSize + 1, limit: Message.maximumSize)) {
            try Message(payload: Data(count: Message.maximumSize + 1)).validateSize()
        }
    }
}
