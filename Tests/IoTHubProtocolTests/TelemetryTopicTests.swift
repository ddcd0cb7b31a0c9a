import Foundation
import IoTHubProtocol
import Testing

@Suite struct TelemetryTopicTests {
    @Test func deviceAndModuleTopics() {
        let message = Message(messageId: "m 1", properties: ["k": "v/w"])
        #expect(
            TelemetryTopic(deviceId: "d1", message: message).name == "devices/d1/messages/events/%24.mid=m%201&k=v%2Fw")
        #expect(
            TelemetryTopic(deviceId: "d1", moduleId: "m1", message: Message()).name
                == "devices/d1/modules/m1/messages/events/")
    }

    @Test func aTopicLongerThanMQTTCarriesIsRefused() throws {
        let prefix = "devices/d1/messages/events/k=".utf8.count
        let fits = TelemetryTopic(
            deviceId: "d1",
            message: Message(properties: ["k": String(repeating: "v", count: TelemetryTopic.maximumNameLength - prefix)]
            ))
        #expect(try fits.validatedName().utf8.count == TelemetryTopic.maximumNameLength)
        let tooLong = TelemetryTopic(
            deviceId: "d1",
            message: Message(properties: [
                "k": String(repeating: "v", count: TelemetryTopic.maximumNameLength - prefix + 1)
            ]))
        #expect(throws: IoTHubError.topicTooLong(length: 65_536, limit: 65_535)) { try tooLong.validatedName() }
        // Encoded bytes count three times: 21,846 spaces are 65,538 bytes on the topic.
        let encoded = TelemetryTopic(
            deviceId: "d1", message: Message(properties: ["k": String(repeating: " ", count: 21_846)]))
        #expect(throws: IoTHubError.topicTooLong(length: prefix + 65_538, limit: 65_535)) {
            try encoded.validatedName()
        }
    }

    @Test(arguments: [
        Message(), Message(messageId: "m 1", properties: ["k": "v/w"]),
        Message(
            payload: Data("body".utf8), messageId: "é€𝄞", correlationId: "c", userId: "u",
            contentType: "application/json", contentEncoding: "utf-8", expiryTimeUTC: "2030-01-01T00:00:00Z",
            outputName: "out put", interfaceId: Message.securityMessageInterfaceId,
            properties: ["$.sub": "thermostat1", "ä": "&=/", "": "", "k": String(repeating: " ", count: 21_846)]),
    ])
    func theLengthBoundIsNeverBelowTheTopic(_ message: Message) {
        for moduleId in [nil, "m1"] as [String?] {
            let name = TelemetryTopic(deviceId: "d-1", moduleId: moduleId, message: message).name
            #expect(
                TelemetryTopic.nameLengthBound(deviceId: "d-1", moduleId: moduleId, message: message) >= name.utf8.count
            )
        }
    }

    @Test func parsesWhatItBuilds() {
        let topic = TelemetryTopic(
            deviceId: "d1", moduleId: "m1", message: Message(outputName: "o", properties: ["a": "&="]))
        #expect(TelemetryTopic(parsing: topic.name) == topic)
        let device = TelemetryTopic(deviceId: "d.1-x", message: Message(contentType: "application/json"))
        #expect(TelemetryTopic(parsing: device.name) == device)
    }

    @Test func acceptsTheFormsSDKsSend() {
        #expect(TelemetryTopic(parsing: "devices/d/messages/events") == TelemetryTopic(deviceId: "d"))
        #expect(TelemetryTopic(parsing: "devices/d/messages/events/") == TelemetryTopic(deviceId: "d"))
        #expect(TelemetryTopic(parsing: "devices/d/modules/m/messages/events/a=1")?.properties["a"] == "1")
    }

    @Test(arguments: [
        "devices/d/messages/devicebound/", "devices//messages/events/", "devices/d/modules//messages/events/",
        "devices/d/messages/eventsX", "device/d/messages/events/", "$iothub/twin/GET/?$rid=1",
        "devices/d", "devices/d/modules/m", "", "devices/d/messages/events2/",
    ])
    func rejectsForeignTopics(_ topic: String) {
        #expect(TelemetryTopic(parsing: topic) == nil)
    }
}
