import Foundation
import IoTHubProtocol
import Testing

/// One vector of `Fixtures/sas_vectors.json`, computed by `generate_sas_vectors.py` with
/// Python's hmac, base64 and urllib.parse.quote.
struct SASVector: Decodable, CustomTestStringConvertible, Sendable {
    var hostName: String
    var deviceId: String?
    var moduleId: String?
    var keyName: String?
    var key: String
    var expiry: Int
    var resourceURI: String
    var encodedResourceURI: String
    var stringToSign: String
    var signature: String
    var token: String

    var testDescription: String {
        "\(resourceURI) key \(key.prefix(6))… se=\(expiry)"
    }

    static let all: [SASVector] = {
        guard let url = Bundle.module.url(forResource: "sas_vectors", withExtension: "json", subdirectory: "Fixtures"),
            let data = try? Data(contentsOf: url),
            let vectors = try? JSONDecoder().decode([SASVector].self, from: data)
        else { return [] }
        return vectors
    }()
}

@Suite struct SASTokenTests {
    @Test func vectorsAreLoaded() {
        #expect(SASVector.all.count == 180)
    }

    @Test(arguments: SASVector.all)
    func signsExactlyLikePython(_ vector: SASVector) throws {
        let uri: String
        if let deviceId = vector.deviceId {
            uri = SASToken.resourceURI(hostName: vector.hostName, deviceId: deviceId, moduleId: vector.moduleId)
        } else {
            uri = vector.hostName
        }
        #expect(uri == vector.resourceURI)
        #expect(PercentEncoding.encode(uri) == vector.encodedResourceURI)
        #expect(
            SASToken.stringToSign(encodedResourceURI: vector.encodedResourceURI, expiry: vector.expiry)
                == vector.stringToSign)
        let token = try SASToken(resourceURI: uri, key: vector.key, expiry: vector.expiry, keyName: vector.keyName)
        #expect(token.signature == vector.signature)
        #expect(token.string == vector.token)
        #expect(token.isSigned(withKey: vector.key))
    }

    /// A signature made elsewhere (the IoT Edge workload API) renders the same token.
    @Test(arguments: SASVector.all.prefix(30))
    func rendersASignatureMadeElsewhereLikePython(_ vector: SASVector) {
        let token = SASToken(
            resourceURI: vector.resourceURI, expiry: vector.expiry, signature: vector.signature, keyName: vector.keyName
        )
        #expect(token.string == vector.token)
        #expect(token.isSigned(withKey: vector.key))
    }

    @Test(arguments: SASVector.all.prefix(30))
    func parsesWhatPythonRenders(_ vector: SASVector) throws {
        let token = try SASToken(parsing: vector.token)
        #expect(token.resourceURI == vector.resourceURI)
        #expect(token.encodedResourceURI == vector.encodedResourceURI)
        #expect(token.signature == vector.signature)
        #expect(token.expiry == vector.expiry)
        #expect(token.keyName == vector.keyName)
        #expect(token.string == vector.token)
        #expect(token.isSigned(withKey: vector.key))
    }

    @Test func verificationRejectsOtherKeysAndTampering() throws {
        let key = Data(repeating: 7, count: 32).base64EncodedString()
        let otherKey = Data(repeating: 8, count: 32).base64EncodedString()
        let token = try SASToken(resourceURI: "hub.example/devices/d1", key: key, expiry: 2_000_000_000)
        #expect(token.isSigned(withKey: key))
        #expect(!token.isSigned(withKey: otherKey))
        #expect(!token.isSigned(withKey: "not base64!"))

        let longer = try SASToken(
            parsing: token.string.replacingOccurrences(of: "se=2000000000", with: "se=2000000001"))
        #expect(!longer.isSigned(withKey: key))
        let elsewhere = try SASToken(parsing: token.string.replacingOccurrences(of: "d1", with: "d2"))
        #expect(!elsewhere.isSigned(withKey: key))
    }

    @Test func verifiesLowerCaseHexEncodingOfTheResource() throws {
        let key = Data(repeating: 1, count: 32).base64EncodedString()
        let lowerHex = "hub.example%2fdevices%2fd1"
        let signature = try SASToken.sign(
            SASToken.stringToSign(encodedResourceURI: lowerHex, expiry: 2_000_000_000), key: key)
        let text = "SharedAccessSignature sr=\(lowerHex)&sig=\(PercentEncoding.encode(signature))&se=2000000000"
        let token = try SASToken(parsing: text)
        #expect(token.resourceURI == "hub.example/devices/d1")
        #expect(token.isSigned(withKey: key))
    }

    @Test func expiry() throws {
        let key = Data(repeating: 1, count: 16).base64EncodedString()
        let token = try SASToken(resourceURI: "h/devices/d", key: key, expiry: 1000)
        #expect(token.isExpired(at: Date(timeIntervalSince1970: 1000)))
        #expect(!token.isExpired(at: Date(timeIntervalSince1970: 999)))
        #expect(token.expiryDate == Date(timeIntervalSince1970: 1000))

        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let fresh = try SASToken(resourceURI: "h/devices/d", key: key, timeToLive: 60, now: now)
        #expect(fresh.expiry == 1_800_000_060)
        let defaulted = try SASToken(resourceURI: "h/devices/d", key: key, now: now)
        #expect(defaulted.expiry == 1_800_003_600)
    }

    @Test func descriptionHidesTheSignature() throws {
        let key = Data(repeating: 3, count: 32).base64EncodedString()
        let token = try SASToken(resourceURI: "h/devices/d", key: key, expiry: 5, keyName: "owner")
        #expect(!token.description.contains(PercentEncoding.encode(token.signature)))
        #expect(token.description.contains("<redacted>"))
        #expect(token.description.contains("skn=owner"))
    }

    @Test func signingRejectsBadKeys() {
        #expect(throws: IoTHubError.valueError(field: "SharedAccessKey", reason: "is not a base64-encoded key")) {
            try SASToken(resourceURI: "h/devices/d", key: "***", expiry: 1)
        }
        #expect(throws: IoTHubError.self) {
            try SASToken(resourceURI: "", key: "AAAA", expiry: 1)
        }
    }

    static let malformed: [(text: String, mentions: String)] = [
        ("sr=a&sig=b&se=1", "SharedAccessSignature"),
        ("SharedAccessSignature", "SharedAccessSignature"),
        ("SharedAccessSignature sig=b&se=1", "no field 'sr'"),
        ("SharedAccessSignature sr=a&se=1", "no field 'sig'"),
        ("SharedAccessSignature sr=a&sig=b", "no field 'se'"),
        ("SharedAccessSignature sr=a&sig=b&se=1&foo=2", "unknown name in field 4 of 4"),
        ("SharedAccessSignature sr=a&sig=b&se=1&sr=c", "gives the field 'sr' twice"),
        ("SharedAccessSignature sr=a&sig=b&se=soon", "expiry"),
        ("SharedAccessSignature sr=a&sig=b&se=-5", "expiry"),
        ("SharedAccessSignature sr=a&sig=&se=1", "empty field 'sig'"),
        ("SharedAccessSignature sr=a&sig=b&se=1&", "field 4 of 4 without '='"),
        ("SharedAccessSignature sr=a&sigb&se=1", "field 2 of 3 without '='"),
    ]

    @Test(arguments: malformed)
    func malformedTokensAreRejectedWithTheReason(_ testCase: (text: String, mentions: String)) {
        do {
            _ = try SASToken(parsing: testCase.text)
            Issue.record("accepted \(testCase.text)")
        } catch {
            #expect(error.code == "ValueError")
            #expect(error.description.contains(testCase.mentions), "\(error.description)")
        }
    }
}
