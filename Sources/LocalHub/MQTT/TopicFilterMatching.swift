/// MQTT topic-filter matching (`+` one level, `#` the rest), for deciding whether a session
/// subscribed to what the hub is about to send.
enum TopicFilterMatching {
    static func matches(filter: String, topic: String) -> Bool {
        var filterLevels = filter.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
            .makeIterator()
        var topicLevels = topic.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
            .makeIterator()
        // Topics starting with '$' are not matched by a leading wildcard.
        if topic.hasPrefix("$"), filter.hasPrefix("+") || filter.hasPrefix("#") { return false }
        while true {
            let filterLevel = filterLevels.next()
            let topicLevel = topicLevels.next()
            switch (filterLevel, topicLevel) {
            case (nil, nil):
                return true
            case (let f?, _) where f.elementsEqual("#".utf8):
                return true
            case (let f?, _?) where f.elementsEqual("+".utf8):
                continue
            case (let f?, let t?):
                if !f.elementsEqual(t) { return false }
            default:
                return false
            }
        }
    }
}
