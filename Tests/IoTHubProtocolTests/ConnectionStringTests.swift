import IoTHubProtocol
import Testing

@Suite struct ConnectionStringTests {
    static let key = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY="

    @Test func parsesADeviceString() throws {
        let parsed = try ConnectionString(
            parsing: "HostName=hub.azure-devices.net;DeviceId=dev1;SharedAccessKey=\(Self.key)")
        #expect(parsed.hostName == "hub.azure-devices.net")
        #expect(parsed.deviceId == "dev1")
        #expect(parsed.moduleId == nil)
        #expect(parsed.credential == .sharedAccessKey(Self.key))
        #expect(parsed.gatewayHostName == nil)
        #expect(parsed.resourceURI == "hub.azure-devices.net/devices/dev1")
    }

    @Test func parsesAModuleStringWithAGateway() throws {
        let text =
            "HostName=hub.azure-devices.net;DeviceId=edge;ModuleId=filter;SharedAccessKey=\(Self.key);GatewayHostName=gateway.local"
        let parsed = try ConnectionString(parsing: text)
        #expect(parsed.moduleId == "filter")
        #expect(parsed.gatewayHostName == "gateway.local")
        #expect(parsed.resourceURI == "hub.azure-devices.net/devices/edge/modules/filter")
        #expect(parsed.rendered() == text)
    }

    @Test func parsesX509AndSignatureStrings() throws {
        let x509 = try ConnectionString(parsing: "HostName=h;DeviceId=d;x509=true")
        #expect(x509.credential == .x509)
        #expect(x509.rendered() == "HostName=h;DeviceId=d;x509=true")
        #expect(try ConnectionString(parsing: "HostName=h;DeviceId=d;x509=True").credential == .x509)

        let token = "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=abc%3D&se=1900000000"
        let signed = try ConnectionString(parsing: "HostName=h;DeviceId=d;SharedAccessSignature=\(token)")
        #expect(signed.credential == .sharedAccessSignature(try SASToken(parsing: token)))
        #expect(signed.rendered() == "HostName=h;DeviceId=d;SharedAccessSignature=\(token)")
    }

    @Test func parsesAPolicyString() throws {
        let text = "HostName=hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=\(Self.key)"
        let parsed = try ConnectionString(parsing: text)
        #expect(parsed.deviceId == nil)
        #expect(parsed.sharedAccessKeyName == "iothubowner")
        #expect(parsed.resourceURI == "hub.azure-devices.net")
        #expect(parsed.rendered() == text)
    }

    @Test func valuesMayContainEqualsSignsAndKeysMayComeInAnyOrder() throws {
        let parsed = try ConnectionString(parsing: "SharedAccessKey=\(Self.key);DeviceId=a=b;HostName=h")
        #expect(parsed.deviceId == "a=b")
        #expect(parsed.credential == .sharedAccessKey(Self.key))
    }

    @Test func toleratesSurroundingWhitespaceAndOneTrailingSemicolon() throws {
        let parsed = try ConnectionString(parsing: "  HostName=h;DeviceId=d;SharedAccessKey=\(Self.key);\n")
        #expect(parsed.deviceId == "d")
    }

    @Test func descriptionNeverShowsSecrets() throws {
        let withKey = try ConnectionString(parsing: "HostName=h;DeviceId=d;SharedAccessKey=\(Self.key)")
        #expect(!withKey.description.contains(Self.key))
        #expect(!String(reflecting: withKey).contains(Self.key))
        #expect(!"\(withKey)".contains(Self.key))
        #expect(withKey.description == "HostName=h;DeviceId=d;SharedAccessKey=<redacted>")

        let token = "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=c2VjcmV0c2lnbmF0dXJl&se=1900000000"
        let withToken = try ConnectionString(parsing: "HostName=h;DeviceId=d;SharedAccessSignature=\(token)")
        #expect(!withToken.description.contains("c2VjcmV0c2lnbmF0dXJl"))
    }

    /// Each bad string, and the key (or phrase) its error must name.
    static let invalid: [(text: String, field: String, mentions: String)] = [
        ("", "connection string", "is empty"),
        ("   ", "connection string", "is empty"),
        ("DeviceId=d;SharedAccessKey=\(key)", "HostName", "is missing"),
        ("HostName=h;SharedAccessKey=\(key)", "DeviceId", "is missing"),
        ("HostName=h;DeviceId=d", "SharedAccessKey", "is missing"),
        ("HostName=h;ModuleId=m;SharedAccessKey=\(key)", "DeviceId", "ModuleId needs a DeviceId"),
        ("HostName=h;DeviceId=d;DeviceId=e;SharedAccessKey=\(key)", "DeviceId", "more than once"),
        ("HostName=;DeviceId=d;SharedAccessKey=\(key)", "HostName", "empty value"),
        ("HostName=h;DeviceId=d;SharedAccessKey=", "SharedAccessKey", "empty value"),
        (
            "HostName=h;DeviceId=d;Password=p", "connection string",
            "unknown key in segment 3 of 3 (known keys: HostName"
        ),
        ("hostname=h;DeviceId=d;SharedAccessKey=\(key)", "connection string", "did you mean 'HostName'"),
        (
            "HostName=h;DeviceId=d;SharedAccessKey=\(key);SharedAccessSignature=SharedAccessSignature sr=a&sig=b&se=1",
            "SharedAccessSignature", "cannot be combined with SharedAccessKey"
        ),
        ("HostName=h;DeviceId=d;SharedAccessKey=\(key);x509=true", "x509", "SharedAccessKey"),
        (
            "HostName=h;DeviceId=d;x509=true;SharedAccessSignature=SharedAccessSignature sr=a&sig=b&se=1",
            "x509", "SharedAccessSignature"
        ),
        ("HostName=h;DeviceId=d;x509=yes", "x509", "must be 'true'"),
        ("HostName=h;DeviceId=d;SharedAccessKey=not base64!", "SharedAccessKey", "not base64"),
        ("HostName=h;DeviceId=d;SharedAccessKey=abc", "SharedAccessKey", "not base64"),
        ("HostName=h;DeviceId=d;SharedAccessSignature=sig", "SharedAccessSignature", "SharedAccessSignature"),
        (
            "HostName=h;DeviceId=d;SharedAccessSignature=SharedAccessSignature sr=a&se=1",
            "SharedAccessSignature", "no field 'sig'"
        ),
        (
            "HostName=h;DeviceId=d;SharedAccessKeyName=owner;SharedAccessKey=\(key)",
            "SharedAccessKeyName", "cannot be combined with DeviceId"
        ),
        ("HostName=h;SharedAccessKeyName=owner", "SharedAccessKey", "policy string needs its key"),
        ("HostName=h;;DeviceId=d;SharedAccessKey=\(key)", "connection string", "empty segment 2 of 4"),
        ("HostName=h;DeviceId;SharedAccessKey=\(key)", "connection string", "segment 2 of 3 that is not of the form"),
    ]

    @Test(arguments: invalid)
    func rejectsWithAnErrorNamingTheKey(_ testCase: (text: String, field: String, mentions: String)) {
        do {
            let parsed = try ConnectionString(parsing: testCase.text)
            Issue.record("accepted: \(parsed)")
        } catch {
            guard case .valueError(let field, let reason) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(field == testCase.field)
            #expect(error.description.contains(testCase.mentions), "\(error.description)")
            #expect(!reason.contains(Self.key), "the error echoes the key")
        }
    }

    @Test func renderingRoundTrips() throws {
        let strings = [
            "HostName=h;DeviceId=d;SharedAccessKey=\(Self.key)",
            "HostName=h;DeviceId=d;ModuleId=m;x509=true;GatewayHostName=g",
            "HostName=h;SharedAccessKeyName=p;SharedAccessKey=\(Self.key)",
        ]
        for text in strings {
            let parsed = try ConnectionString(parsing: text)
            #expect(try ConnectionString(parsing: parsed.rendered()) == parsed)
        }
    }
}
