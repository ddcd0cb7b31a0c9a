import Testing

@testable import LocalHub

@Suite struct TopicFilterMatchingTests {
    /// One row of the table: a filter, a topic and whether the filter matches the topic.
    struct Case: Sendable, CustomTestStringConvertible {
        var filter: String
        var topic: String
        var matches: Bool

        init(_ filter: String, _ topic: String, _ matches: Bool) {
            self.filter = filter
            self.topic = topic
            self.matches = matches
        }

        var testDescription: String { "\(filter) \(matches ? "matches" : "does not match") \(topic)" }
    }

    static let exact: [Case] = [
        Case("a", "a", true),
        Case("a/b/c", "a/b/c", true),
        Case("devices/d1/messages/events/", "devices/d1/messages/events/", true),
        Case("/", "/", true),
        Case("/a", "/a", true),
        Case("é/日本", "é/日本", true),
        Case("a/b", "a/b/c", false),
        Case("a/b/c", "a/b", false),
        Case("a/b", "a/c", false),
        Case("a", "A", false),
        Case("a", "a/", false),
        Case("a/", "a", false),
        Case("/a", "a", false),
        Case("a", "ab", false),
        Case("ab", "a", false),
    ]

    static let multiLevel: [Case] = [
        Case("#", "a", true),
        Case("#", "a/b/c", true),
        Case("#", "/", true),
        Case("a/#", "a/b", true),
        Case("a/#", "a/b/c/d", true),
        Case("a/#", "a/", true),
        // MQTT 3.1.1 section 4.7.1.2: "sport/tennis/player1/#" also matches "sport/tennis/player1".
        Case("a/#", "a", true),
        Case("sport/tennis/player1/#", "sport/tennis/player1", true),
        Case("sport/tennis/player1/#", "sport/tennis/player1/ranking", true),
        Case("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true),
        Case("sport/#", "sport", true),
        Case("a/#", "b", false),
        Case("a/#", "ab", false),
        Case("a/#", "b/a", false),
        Case("a/b/#", "a", false),
        Case("sport/tennis/player1/#", "sport/tennis/player2", false),
    ]

    static let singleLevel: [Case] = [
        Case("+", "a", true),
        Case("a/+", "a/b", true),
        Case("a/+", "a/", true),
        Case("a/+/c", "a/b/c", true),
        Case("a/+/c", "a//c", true),
        Case("+/+", "/finance", true),
        Case("/+", "/finance", true),
        Case("+/b/+", "a/b/c", true),
        Case("a/+/+/d", "a/b/c/d", true),
        Case("+/tennis/#", "sport/tennis/player1", true),
        Case("sport/+/player1", "sport/tennis/player1", true),
        // Section 4.7.1.3: "sport/+" does not match "sport" but does match "sport/".
        Case("sport/+", "sport", false),
        Case("sport/+", "sport/", true),
        Case("+", "/finance", false),
        Case("+", "a/b", false),
        Case("a/+", "a", false),
        Case("a/+", "a/b/c", false),
        Case("a/+/c", "a/b/d", false),
        Case("a/+/c", "a/b/c/d", false),
        Case("+/b", "a/c", false),
    ]

    /// Section 4.7.2: a leading wildcard does not match topics that start with `$`.
    static let dollarTopics: [Case] = [
        Case("#", "$iothub/twin/res/200/?$rid=1", false),
        Case("#", "$SYS/broker/clients", false),
        Case("+/twin/res/#", "$iothub/twin/res/200/?$rid=1", false),
        Case("+/monitor/Clients", "$SYS/monitor/Clients", false),
        Case("+", "$iothub", false),
        Case("$SYS/#", "$SYS/broker/clients", true),
        Case("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        Case("$iothub/twin/res/#", "$iothub/twin/res/200/?$rid=1", true),
        Case("$iothub/methods/POST/#", "$iothub/methods/POST/reboot/?$rid=7", true),
        Case("$iothub/twin/PATCH/properties/desired/#", "$iothub/twin/PATCH/properties/desired/?$version=3", true),
        Case("$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/?$version=3", false),
        Case("$iothub/+/res/#", "$iothub/twin/res/204/?$rid=2&$version=4", true),
        // Only a leading `$` is special: a `$` further in is matched by wildcards.
        Case("a/#", "a/$b", true),
        Case("a/+", "a/$b", true),
    ]

    static let cloudToDevice: [Case] = [
        Case("devices/d/messages/devicebound/#", "devices/d/messages/devicebound/%24.mid=1", true),
        Case(
            "devices/d/messages/devicebound/#",
            "devices/d/messages/devicebound/%24.mid=1&%24.to=%2Fdevices%2Fd%2Fmessages%2Fdevicebound", true),
        Case("devices/d/messages/devicebound/#", "devices/d/messages/devicebound", true),
        Case("devices/d/messages/devicebound/#", "devices/d/messages/devicebound/", true),
        Case("devices/d/messages/devicebound/#", "devices/e/messages/devicebound/%24.mid=1", false),
        Case("devices/d/messages/devicebound/#", "devices/d/messages/events/", false),
        Case("devices/d/messages/devicebound/#", "devices/d/messages", false),
        Case("devices/d/modules/m/messages/devicebound/#", "devices/d/messages/devicebound/%24.mid=1", false),
        Case("devices/+/messages/devicebound/#", "devices/d/messages/devicebound/%24.mid=1", true),
    ]

    @Test(arguments: exact) func exactFilters(_ row: Case) {
        #expect(TopicFilterMatching.matches(filter: row.filter, topic: row.topic) == row.matches)
    }

    @Test(arguments: multiLevel) func multiLevelWildcard(_ row: Case) {
        #expect(TopicFilterMatching.matches(filter: row.filter, topic: row.topic) == row.matches)
    }

    @Test(arguments: singleLevel) func singleLevelWildcard(_ row: Case) {
        #expect(TopicFilterMatching.matches(filter: row.filter, topic: row.topic) == row.matches)
    }

    @Test(arguments: dollarTopics) func topicsStartingWithDollar(_ row: Case) {
        #expect(TopicFilterMatching.matches(filter: row.filter, topic: row.topic) == row.matches)
    }

    @Test(arguments: cloudToDevice) func cloudToDeviceSubscription(_ row: Case) {
        #expect(TopicFilterMatching.matches(filter: row.filter, topic: row.topic) == row.matches)
    }

    /// A filter without wildcards matches exactly the topic equal to it.
    @Test(arguments: ["a", "a/b", "/", "a//b", "$iothub/twin/GET/?$rid=1", "devices/d/messages/events/a=1"])
    func filterWithoutWildcardsMatchesItselfOnly(_ topic: String) {
        #expect(TopicFilterMatching.matches(filter: topic, topic: topic))
        #expect(!TopicFilterMatching.matches(filter: topic, topic: topic + "x"))
        #expect(!TopicFilterMatching.matches(filter: topic + "/x", topic: topic))
    }
}
