import Foundation
import HTTPTypes
import IoTHubProtocol
import Testing

@testable import Sidecar

@Suite struct MessageMappingTests {
    static func fields(_ pairs: [(String, String)]) -> HTTPFields {
        var fields = HTTPFields()
        for (name, value) in pairs {
            if let fieldName = HTTPField.Name(name) { fields.append(HTTPField(name: fieldName, value: value)) }
        }
        return fields
    }

    @Test func headersBecomeProperties() throws {
        let headers = Self.fields([
            ("Content-Type", "application/json"), ("iothub-messageid", "m1"), ("IoTHub-CorrelationId", "c1"),
            ("iothub-userid", "u"),
            ("iothub-contentencoding", "utf-8"), ("iothub-expiry", "2030-01-01T00:00:00Z"),
            ("iothub-app-Mixed-Case", "a b%20c"),
            ("X-Other", "ignored"),
        ])
        let message = try MessageMapping.message(payload: Data("{}".utf8), headers: headers, isModule: false)
        #expect(message.messageId == "m1")
        #expect(message.correlationId == "c1")
        #expect(message.userId == "u")
        #expect(
            message.contentType == "application/json", "without iothub-contenttype the request's Content-Type is used")
        #expect(message.contentEncoding == "utf-8")
        #expect(message.expiryTimeUTC == "2030-01-01T00:00:00Z")
        #expect(
            message.properties == ["Mixed-Case": "a b%20c"], "names keep their case; values are not percent-decoded")
    }

    /// `iothub-interfaceid` takes the security agent's interface id only (a security message),
    /// in headers and in batch entries.
    @Test func theSecurityInterfaceIdMarksASecurityMessageAndNoOtherValueIsTaken() throws {
        let single = try MessageMapping.message(
            payload: Data(), headers: Self.fields([("iothub-interfaceid", "urn:azureiot:Security:SecurityAgent:1")]),
            isModule: false)
        #expect(single.isSecurityMessage)
        let batch = try MessageMapping.batch(
            Data(
                #"[{"body":"a","properties":{"iothub-interfaceid":"urn:azureiot:Security:SecurityAgent:1"}},{"body":"b"}]"#
                    .utf8), isModule: false)
        #expect(batch.map(\.isSecurityMessage) == [true, false])
        do {
            _ = try MessageMapping.message(
                payload: Data(), headers: Self.fields([("iothub-interfaceid", "urn:x")]), isModule: false)
            Issue.record("another interface id was taken")
        } catch {
            #expect(error.code == "ValueError")
            #expect(error.field == "iothub-interfaceid")
        }
    }

    /// IoT Plug and Play: `iothub-componentname` is the `$.sub` property, in headers and in
    /// batch entries; it must be a component name, and not given twice.
    @Test func theComponentNameHeaderSetsSub() throws {
        let single = try MessageMapping.message(
            payload: Data(), headers: Self.fields([("iothub-componentname", "thermostat1"), ("iothub-app-unit", "C")]),
            isModule: false)
        #expect(single.componentName == "thermostat1")
        #expect(single.properties == ["$.sub": "thermostat1", "unit": "C"])
        let batch = try MessageMapping.batch(
            Data(#"[{"body":"a","properties":{"iothub-componentname":"thermostat2"}},{"body":"b"}]"#.utf8),
            isModule: false)
        #expect(batch.map(\.componentName) == ["thermostat2", nil])
        for pairs in [
            [("iothub-componentname", "")], [("iothub-componentname", "two words")],
            [("iothub-componentname", "a"), ("iothub-app-$.sub", "b")],
            [("iothub-app-$.sub", "b"), ("iothub-componentname", "a")],
        ] {
            #expect {
                _ = try MessageMapping.message(payload: Data(), headers: Self.fields(pairs), isModule: false)
            } throws: { error in
                (error as? ProblemDetails)?.code == "ValueError"
            }
        }
    }

    @Test func aMessageWithoutIdGetsALowerCaseUUID() throws {
        let message = try MessageMapping.message(payload: Data(), headers: HTTPFields(), isModule: false)
        let id = try #require(message.messageId)
        #expect(UUID(uuidString: id) != nil)
        #expect(id == id.lowercased())
    }

    @Test(arguments: [
        [("iothub-colour", "red")], [("iothub-app-", "x")], [("iothub-messageid", "")], [("iothub-outputname", "out")],
        [("iothub-app-a", "1"), ("iothub-app-a", "2")], [("iothub-messageid", "1"), ("IOTHUB-MESSAGEID", "2")],
    ])
    func badPropertiesAreRefused(_ pairs: [(String, String)]) {
        #expect(throws: ProblemDetails.self) {
            try MessageMapping.message(payload: Data(), headers: Self.fields(pairs), isModule: false)
        }
    }

    /// The HTTP server replaced bytes that were not UTF-8 with U+FFFD before the sidecar sees
    /// the headers: such a value is refused, naming the header, not sent altered.
    @Test(arguments: [
        "iothub-messageid", "iothub-correlationid", "iothub-contenttype", "iothub-app-Colour", "Content-Type",
    ])
    func aHeaderValueWithAReplacementCharacterIsRefused(_ name: String) {
        do {
            _ = try MessageMapping.message(
                payload: Data(), headers: Self.fields([(name, "id-\u{FFFD}")]), isModule: false)
            Issue.record("a replaced byte was sent in \(name)")
        } catch {
            #expect(error.code == "ValueError")
            #expect(error.field == name)
            #expect(error.detail.contains("not valid UTF-8"), "\(error.detail)")
        }
    }

    @Test func otherHeadersAndTextOutsideASCIIAreLeftAlone() throws {
        let headers = Self.fields([("iothub-app-city", "Zürich"), ("X-Other", "\u{FFFD}"), ("iothub-messageid", "€-1")])
        let message = try MessageMapping.message(payload: Data(), headers: headers, isModule: false)
        #expect(message.properties == ["city": "Zürich"])
        #expect(message.messageId == "€-1")
        // In a batch the JSON is read byte by byte: U+FFFD there is what the client wrote.
        let batch = try MessageMapping.batch(
            Data(#"[{"body":"x","properties":{"iothub-app-c":"\ufffd"}}]"#.utf8), isModule: false)
        #expect(batch[0].properties == ["c": "\u{FFFD}"])
    }

    @Test func modulesMayNameAnOutput() throws {
        let message = try MessageMapping.message(
            payload: Data(), headers: Self.fields([("iothub-outputname", "alerts")]), isModule: true)
        #expect(message.outputName == "alerts")
    }

    @Test func batchesAreCheckedAsAWhole() throws {
        let good = Data(#"[{"body":"t","properties":{"iothub-app-k":"v"}},{"body":"AAE=","base64Encoded":true}]"#.utf8)
        let messages = try MessageMapping.batch(good, isModule: false)
        #expect(messages.count == 2)
        #expect(messages[0].payload == Data("t".utf8))
        #expect(messages[0].properties == ["k": "v"])
        #expect(messages[1].payload == Data([0, 1]))
        for bad in [
            #"{}"#, #"[]"#, #"[{"body":1}]"#, #"[{"body":"x","properties":null}]"#,
            #"[{"body":"!","base64Encoded":true}]"#,
            #"[{"body":"x","properties":{"colour":"red"}}]"#,
        ] {
            #expect(throws: ProblemDetails.self, "\(bad)") { try MessageMapping.batch(Data(bad.utf8), isModule: false) }
        }
        // A refusal names the entry and where in it.
        do {
            _ = try MessageMapping.batch(
                Data(#"[{"body":"x"},{"body":"y","properties":{"iothub-colour":"red"}}]"#.utf8), isModule: false)
            Issue.record("a batch with an unknown property was taken")
        } catch {
            #expect(error.detail.hasPrefix("entry 1: "), "\(error.detail)")
            #expect(error.field == "[1].properties.iothub-colour")
        }
        // A JSON syntax error is called one, not a body of the wrong type.
        do {
            _ = try MessageMapping.batch(Data(#"[{"body":'{"temp":21}'}]"#.utf8), isModule: false)
            Issue.record("a batch that is not JSON was taken")
        } catch {
            #expect(error.detail.contains("not valid JSON (a syntax error)"), "\(error.detail)")
            #expect(!error.detail.contains("must be a string"), "\(error.detail)")
        }
    }

    @Test func receivedMessagesBecomeHeaders() {
        let message = Message(
            payload: Data(), messageId: "m", correlationId: "c", contentType: "text/plain",
            properties: ["Color": "blue"], to: "/devices/d/messages/deviceBound",
            ack: "full")
        let headers = MessageMapping.headers(for: message)
        #expect(headers[HTTPField.Name("iothub-messageid")!] == "m")
        #expect(headers[HTTPField.Name("iothub-ack")!] == "full")
        #expect(headers[HTTPField.Name("iothub-app-Color")!] == "blue")
        #expect(headers[HTTPField.Name("iothub-userid")!] == nil)
    }
}
