import IoTHubProtocol
import Testing

@Suite struct IoTHubErrorTests {
    static let codes: [(IoTHubError, String, Bool)] = [
        (.credentialError("x"), "CredentialError", false),
        (.connectionFailedError("x"), "ConnectionFailedError", true),
        (.connectionDroppedError("x"), "ConnectionDroppedError", true),
        (.noConnectionError("x"), "NoConnectionError", false),
        (.operationTimeout("x"), "OperationTimeout", true),
        (.operationCancelled("x"), "OperationCancelled", false),
        (.serviceError(status: 429, message: "throttled", retryAfterSeconds: 5), "ServiceError", true),
        (.serviceError(status: 503, message: "busy"), "ServiceError", true),
        (.serviceError(status: 400, message: "bad"), "ServiceError", false),
        (.clientError("x"), "ClientError", false),
        (.valueError(field: "k", reason: "r"), "ValueError", false),
        (.messageTooLarge(size: 2, limit: 1), "ValueError", false),
        (.topicTooLong(length: 2, limit: 1), "ValueError", false),
    ]

    @Test(arguments: codes)
    func carriesTheSeedsClassNames(_ testCase: (IoTHubError, String, Bool)) {
        let (error, code, transient) = testCase
        #expect(error.code == code)
        #expect(error.isTransient == transient)
        #expect(error.description.hasPrefix("\(code): "))
    }

    @Test func descriptionsExplain() {
        #expect(
            IoTHubError.serviceError(status: 404, message: "no twin").description
                == "ServiceError: the hub answered 404: no twin")
        #expect(
            IoTHubError.valueError(field: "HostName", reason: "is missing").description
                == "ValueError: HostName is missing")
        #expect(IoTHubError.valueError(field: nil, reason: "bad").description == "ValueError: bad")
        #expect(
            IoTHubError.messageTooLarge(size: 300_000, limit: 262_144).description
                == "ValueError: the message is 300000 bytes; IoT Hub accepts at most 262144")
        #expect(
            IoTHubError.topicTooLong(length: 65_600, limit: 65_535).description
                == "ValueError: the message's properties make an MQTT topic of 65600 bytes; at most 65535 fit")
    }
}
