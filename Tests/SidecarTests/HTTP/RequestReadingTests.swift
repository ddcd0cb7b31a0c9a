import HTTPTypes
import Hummingbird
import Testing

@testable import Sidecar

@Suite struct RequestReadingTests {
    @Test(arguments: [
        ("application/json", "application/json"),
        ("Application/Vnd.Microsoft.IoTHub.JSON; charset=utf-8", "application/vnd.microsoft.iothub.json"),
        (" \ttext/plain ;x=1", "text/plain"), ("", ""), ("  ; a=b", ""), ("a/b\t", "a/b"),
    ])
    func mediaTypes(contentType: String, expected: String) {
        #expect(Request.mediaType(ofContentType: contentType) == expected)
    }

    /// `joinedValue(of:)` answers what the `HTTPFields` subscript does.
    @Test func joinedValuesAreTheSubscripts() {
        var fields = HTTPFields()
        fields.append(HTTPField(name: .contentType, value: "application/json"))
        fields.append(HTTPField(name: .accept, value: "a"))
        fields.append(HTTPField(name: .cookie, value: "x=1"))
        fields.append(HTTPField(name: .accept, value: "b"))
        fields.append(HTTPField(name: .cookie, value: "y=2"))
        for name in [HTTPField.Name.contentType, .accept, .cookie, .prefer] {
            #expect(fields.joinedValue(of: name) == fields[name], "\(name)")
        }
        #expect(fields.joinedValue(of: .accept) == "a, b")
        #expect(fields.joinedValue(of: .prefer) == nil)
    }
}
