import IoTHubProtocol
import Testing

@testable import Sidecar

@Suite struct ListenAddressTests {
    @Test func listenAddresses() throws {
        #expect(try ListenAddress(parsing: "127.0.0.1:8080") == .tcp(host: "127.0.0.1", port: 8080))
        #expect(try ListenAddress(parsing: ":9000") == .tcp(host: "127.0.0.1", port: 9000))
        #expect(try ListenAddress(parsing: "[::1]:8080") == .tcp(host: "::1", port: 8080))
        #expect(try ListenAddress(parsing: "unix:/run/x.sock") == .unix(path: "/run/x.sock"))
        for bad in ["8080", "host:", "host:70000", "unix:"] {
            #expect(throws: IoTHubError.self) { try ListenAddress(parsing: bad) }
        }
    }
}
