import IoTHubProtocol
import Testing

@Suite struct TwinTopicTests {
    @Test func requestTopics() {
        #expect(TwinRequestTopic(.get, requestId: "r1").name == "$iothub/twin/GET/?$rid=r1")
        #expect(
            TwinRequestTopic(.patchReportedProperties, requestId: "r 2").name
                == "$iothub/twin/PATCH/properties/reported/?$rid=r%202")
        #expect(TwinRequestTopic(parsing: "$iothub/twin/GET/?$rid=r1") == TwinRequestTopic(.get, requestId: "r1"))
        #expect(
            TwinRequestTopic(parsing: "$iothub/twin/PATCH/properties/reported/?$rid=r%202")
                == TwinRequestTopic(.patchReportedProperties, requestId: "r 2"))
        let id = RequestID.make()
        #expect(TwinRequestTopic(parsing: TwinRequestTopic(.get, requestId: id).name)?.requestId == id)
    }

    @Test(arguments: [
        "$iothub/twin/GET/", "$iothub/twin/GET/?$rid=", "$iothub/twin/PUT/?$rid=1",
        "$iothub/twin/PATCH/properties/desired/?$rid=1", "$iothub/twin/GET?$rid=1", "$iothub/twin/GET/?rid",
    ])
    func rejectsForeignRequests(_ topic: String) {
        #expect(TwinRequestTopic(parsing: topic) == nil)
    }

    @Test func responseTopics() {
        let get = TwinResponseTopic(status: 200, requestId: "abc")
        #expect(get.name == "$iothub/twin/res/200/?$rid=abc")
        let patch = TwinResponseTopic(status: 204, requestId: "abc", version: 7)
        #expect(patch.name == "$iothub/twin/res/204/?$rid=abc&$version=7")
        #expect(TwinResponseTopic(parsing: patch.name) == patch)
        #expect(TwinResponseTopic(parsing: get.name) == get)
        // IoT Hub may put $version first.
        #expect(
            TwinResponseTopic(parsing: "$iothub/twin/res/429/?$version=3&$rid=x")
                == TwinResponseTopic(status: 429, requestId: "x", version: 3))
    }

    @Test(arguments: [
        "$iothub/twin/res/abc/?$rid=1", "$iothub/twin/res/200/?$rid=1&$version=x", "$iothub/twin/res/200/",
        "$iothub/methods/res/200/?$rid=1",
    ])
    func rejectsForeignResponses(_ topic: String) {
        #expect(TwinResponseTopic(parsing: topic) == nil)
    }

    @Test func desiredPatchTopics() {
        #expect(DesiredPropertiesPatchTopic(version: 12).name == "$iothub/twin/PATCH/properties/desired/?$version=12")
        #expect(
            DesiredPropertiesPatchTopic(parsing: "$iothub/twin/PATCH/properties/desired/?$version=12")
                == DesiredPropertiesPatchTopic(version: 12))
        #expect(DesiredPropertiesPatchTopic(parsing: "$iothub/twin/PATCH/properties/desired/?$version=x") == nil)
        #expect(DesiredPropertiesPatchTopic(parsing: "$iothub/twin/PATCH/properties/reported/?$version=1") == nil)
        #expect(TopicFilter.desiredPropertiesPatches == "$iothub/twin/PATCH/properties/desired/#")
        #expect(TopicFilter.twinResponses == "$iothub/twin/res/#")
    }
}
