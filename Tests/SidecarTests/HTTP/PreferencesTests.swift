import HTTPTypes
import Testing

@testable import Sidecar

@Suite struct PreferencesTests {
    static func preferences(_ values: String...) -> Preferences {
        var fields = HTTPFields()
        for value in values { fields.append(HTTPField(name: .prefer, value: value)) }
        return Preferences(fields)
    }

    @Test(arguments: [
        ["respond-async"], ["Respond-Async"], ["wait=10, respond-async"], ["respond-async; foo=bar"],
        [" respond-async ,wait=5"],
        ["wait=1", "RESPOND-ASYNC"], ["handling=lenient", "x=\"a\\\"b\", respond-async"],
    ])
    func respondAsyncIsFoundAmongOtherPreferences(_ values: [String]) {
        var fields = HTTPFields()
        for value in values { fields.append(HTTPField(name: .prefer, value: value)) }
        #expect(Preferences(fields).respondAsync)
    }

    @Test(arguments: [
        "", "respond-asynchronously", "wait=respond-async", "x=\"respond-async\"", "x=\"a, respond-async\"",
        "x; respond-async", "x=\"unterminated, respond-async", "x=\"ends in a backslash\\", "respond-async\"",
    ])
    func lookalikesAreNotRespondAsync(_ value: String) {
        #expect(!Self.preferences(value).respondAsync)
    }

    @Test func valuesAreUnquotedAndTheFirstOfTwiceGivenWins() {
        let preferences = Self.preferences("wait=10, Return=\"minimal\"", "wait=99")
        #expect(preferences.values["wait"] == .some("10"))
        #expect(preferences.values["return"] == .some("minimal"))
        #expect(Self.preferences().values.isEmpty)
        #expect(
            Self.preferences("a=\"x\\\\y\", b=, c = \"\" ; q=1, D").values == ["a": "x\\y", "b": "", "c": "", "d": nil])
        #expect(Self.preferences("ünïcode=1, wait=2").values["wait"] == .some("2"))
    }
}
