import Foundation
import IoTHubProtocol
import Testing

@Suite struct MethodTopicTests {
    @Test func requestTopics() {
        let topic = MethodRequestTopic(methodName: "reboot now", requestId: "1")
        #expect(topic.name == "$iothub/methods/POST/reboot%20now/?$rid=1")
        #expect(MethodRequestTopic(parsing: topic.name) == topic)
        #expect(
            MethodRequestTopic(parsing: "$iothub/methods/POST/getTemp/?$rid=ab12")
                == MethodRequestTopic(methodName: "getTemp", requestId: "ab12"))
        #expect(TopicFilter.methodRequests == "$iothub/methods/POST/#")
    }

    @Test(arguments: [
        "$iothub/methods/POST/?$rid=1", "$iothub/methods/POST/m/", "$iothub/methods/POST/a/b/?$rid=1",
        "$iothub/methods/res/200/?$rid=1", "$iothub/methods/POST/m/?$rid=",
    ])
    func rejectsForeignRequests(_ topic: String) {
        #expect(MethodRequestTopic(parsing: topic) == nil)
    }

    @Test func responseTopics() {
        let topic = MethodResponseTopic(status: 404, requestId: "7")
        #expect(topic.name == "$iothub/methods/res/404/?$rid=7")
        #expect(MethodResponseTopic(parsing: topic.name) == topic)
        #expect(MethodResponseTopic(parsing: "$iothub/methods/res/x/?$rid=7") == nil)
        #expect(MethodResponseTopic(parsing: "$iothub/methods/res/200/") == nil)
    }

    @Test func requestsAndResponses() throws {
        let request = MethodRequest(topic: "$iothub/methods/POST/echo/?$rid=42", payload: Data("{\"a\":1}".utf8))
        #expect(request == MethodRequest(requestId: "42", name: "echo", payload: Data("{\"a\":1}".utf8)))
        #expect(MethodRequest(topic: "devices/d/messages/events/", payload: Data()) == nil)
        let response = MethodResponse(answering: try #require(request), status: 200, payload: Data("true".utf8))
        #expect(response.topic.name == "$iothub/methods/res/200/?$rid=42")
        #expect(MethodResponse(requestId: "1", status: 500).payload == Data("null".utf8))
    }
}
