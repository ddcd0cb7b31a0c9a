import IoTHubDevice
import IoTHubProtocol
import Testing

@Suite struct ProxyOptionsTests {
    @Test func urlsOfEveryKindAreRead() throws {
        #expect(
            try ProxyOptions(url: "http://proxy.example:3128")
                == ProxyOptions(kind: .http, address: "proxy.example", port: 3128))
        #expect(
            try ProxyOptions(url: "SOCKS5H://user:p%40ss@10.0.0.1/")
                == ProxyOptions(kind: .socks5, address: "10.0.0.1", port: 1080, username: "user", password: "p@ss"))
        #expect(
            try ProxyOptions(url: "socks4://dev@[::1]:1081")
                == ProxyOptions(kind: .socks4, address: "::1", port: 1081, username: "dev"))
    }

    @Test(arguments: [
        "proxy:3128", "ftp://proxy:21", "http://", "http://proxy:0", "http://proxy:99999", "http://proxy:3128/path",
        "http://[::1",
    ])
    func badURLsAreRefused(url: String) {
        #expect(throws: IoTHubError.self) { try ProxyOptions(url: url) }
    }

    @Test func theDescriptionNeverShowsThePassword() throws {
        let proxy = try ProxyOptions(url: "socks5://alice:secret@proxy:1080")
        #expect("\(proxy)" == "socks5://alice@proxy:1080")
        #expect(!"\(proxy)".contains("secret"))
    }

    @Test func theConfigurationChecksTheProxy() {
        var configuration = DeviceClientConfiguration()
        configuration.proxyOptions = ProxyOptions(
            kind: .socks4, address: "p", port: 1080, username: "u", password: "no")
        #expect(throws: IoTHubError.self) { try configuration.validate() }
        configuration.proxyOptions = ProxyOptions(
            kind: .socks5, address: "p", port: 1080, username: String(repeating: "u", count: 256))
        #expect(throws: IoTHubError.self) { try configuration.validate() }
        configuration.proxyOptions = ProxyOptions(kind: .http, address: "p", port: 3128, username: "u", password: "p")
        #expect(throws: Never.self) { try configuration.validate() }
    }
}
