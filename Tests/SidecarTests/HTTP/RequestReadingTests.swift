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
}
