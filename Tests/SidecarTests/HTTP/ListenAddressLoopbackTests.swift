import Testing

@testable import Sidecar

@Suite struct ListenAddressLoopbackTests {
    @Test(arguments: [
        "127.0.0.1:8080", "127.1.2.3:0", "127.255.255.255:1", "localhost:8080", "LocalHost:1", "[::1]:8080",
        "[0:0:0:0:0:0:0:1]:1",
        "[::ffff:127.0.0.1]:1", ":8080", "unix:/run/sidecar.sock",
    ])
    func onlyThisMachineCanReach(_ text: String) throws {
        #expect(try ListenAddress(parsing: text).isLoopbackOnly)
    }

    @Test(arguments: [
        "0.0.0.0:8080", "[::]:8080", "192.168.1.10:8080", "10.0.0.1:1", "128.0.0.1:1", "[::2]:1", "[fe80::1]:1",
        "[::ffff:10.0.0.1]:1",
        "[::ffff:0.0.0.0]:1", "sidecar.example:8080", "localhost.example:1", "127.0.0.1.example:1", "127.1:1",
        "example.com:0",
    ])
    func otherMachinesCanReach(_ text: String) throws {
        #expect(try !ListenAddress(parsing: text).isLoopbackOnly)
    }
}
