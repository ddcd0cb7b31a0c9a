import IoTHubProtocol
import Testing

@Suite struct CloudToDeviceTopicTests {
    @Test func buildsAndParsesCloudToDeviceTopics() {
        let bag = Message(messageId: "1", properties: ["p": "a b"], to: "/devices/d/messages/deviceBound", ack: "full")
            .cloudToDevicePropertyBag
        let topic = CloudToDeviceTopic(deviceId: "d", properties: bag)
        #expect(
            topic.name
                == "devices/d/messages/devicebound/%24.mid=1&%24.to=%2Fdevices%2Fd%2Fmessages%2FdeviceBound&iothub-ack=full&p=a%20b"
        )
        #expect(CloudToDeviceTopic(parsing: topic.name) == topic)
        #expect(CloudToDeviceTopic(parsing: "devices/d/messages/devicebound") == CloudToDeviceTopic(deviceId: "d"))
        #expect(TopicFilter.cloudToDevice(deviceId: "d") == "devices/d/messages/devicebound/#")
    }

    @Test(arguments: [
        "devices/d/messages/events/", "devices//messages/devicebound/", "devices/d/messages/deviceboundX", "x",
    ])
    func rejectsForeignCloudToDeviceTopics(_ topic: String) {
        #expect(CloudToDeviceTopic(parsing: topic) == nil)
    }

    @Test func buildsAndParsesModuleInputTopics() {
        let topic = ModuleInputTopic(
            deviceId: "d", moduleId: "m", inputName: "in put/1", properties: PropertyBag(decoding: "%24.mid=5&k=v"))
        #expect(topic.name == "devices/d/modules/m/inputs/in%20put%2F1/%24.mid=5&k=v")
        #expect(ModuleInputTopic(parsing: topic.name) == topic)
        #expect(ModuleInputTopic(parsing: "devices/d/modules/m/inputs/in1")?.inputName == "in1")
        #expect(TopicFilter.moduleInputs(deviceId: "d", moduleId: "m") == "devices/d/modules/m/inputs/#")
    }

    @Test(arguments: [
        "devices/d/modules/m/inputs/", "devices/d/modules/m/outputs/x/", "devices/d/inputs/x/",
        "devices//modules/m/inputs/x/",
    ])
    func rejectsForeignInputTopics(_ topic: String) {
        #expect(ModuleInputTopic(parsing: topic) == nil)
    }
}
