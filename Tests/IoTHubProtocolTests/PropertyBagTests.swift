import IoTHubProtocol
import PropertyBased
import Testing

@Suite struct PropertyBagTests {
    @Test func encodesKeysAndValues() {
        let bag = PropertyBag([
            .init(key: "$.mid", value: "id 1"),
            .init(key: "$.ct", value: "application/json"),
            .init(key: "a&b", value: "c=d"),
            .init(key: "flag", value: nil),
            .init(key: "empty", value: ""),
        ])
        #expect(bag.encoded == "%24.mid=id%201&%24.ct=application%2Fjson&a%26b=c%3Dd&flag&empty=")
    }

    @Test func decodesPresenceEmptinessAndOrder() {
        let bag = PropertyBag(decoding: "%24.to=%2Fdevices%2Fd%2Fmessages%2FdeviceBound&flag&empty=&x=1=2")
        #expect(
            bag.entries == [
                .init(key: "$.to", value: "/devices/d/messages/deviceBound"),
                .init(key: "flag", value: nil),
                .init(key: "empty", value: ""),
                .init(key: "x", value: "1=2"),
            ])
        #expect(bag["flag"] == nil)
        #expect(bag["empty"] == "")
        #expect(bag["missing"] == nil)
        #expect(PropertyBag(decoding: "").isEmpty)
        #expect(PropertyBag(decoding: "&&").isEmpty)
    }

    @Test(arguments: hostileStrings)
    func hostileKeysAndValuesSurvive(_ value: String) {
        let bag = PropertyBag([.init(key: value.isEmpty ? "k" : value, value: value), .init(key: "next", value: "1")])
        #expect(PropertyBag(decoding: bag.encoded) == bag)
    }

    @Test func arbitraryBagsRoundTrip() async {
        let entry = zip(hostileStringGenerator.filter { !$0.isEmpty }, hostileStringGenerator.optional())
            .map { PropertyBag.Entry(key: $0, value: $1) }
        await propertyCheck(count: 200, input: entry.array(of: 0...8)) { entries in
            let bag = PropertyBag(entries)
            #expect(PropertyBag(decoding: bag.encoded) == bag)
        }
    }

    @Test func veryLongValuesSurvive() {
        let long = String(repeating: "é&=/ ", count: 20_000)
        let bag = PropertyBag([.init(key: "long", value: long)])
        #expect(PropertyBag(decoding: bag.encoded)["long"] == long)
    }
}
