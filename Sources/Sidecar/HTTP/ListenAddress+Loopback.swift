#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

extension ListenAddress {
    /// Whether only this machine can connect: a unix socket, `localhost`, an IPv4 address in
    /// 127.0.0.0/8, `::1`, or an IPv4-mapped IPv6 address in 127.0.0.0/8. Any other address,
    /// the wildcards `0.0.0.0` and `::` among them, and any other host name (it may resolve to
    /// anything) is reachable from elsewhere.
    public var isLoopbackOnly: Bool {
        switch self {
        case .unix:
            return true
        case .tcp(let host, _):
            if host.lowercased() == "localhost" { return true }
            var ipv4 = in_addr()
            if inet_pton(AF_INET, host, &ipv4) == 1 {
                // s_addr is in network byte order: its first byte is the first number.
                return withUnsafeBytes(of: &ipv4) { $0.first } == 127
            }
            var ipv6 = in6_addr()
            guard inet_pton(AF_INET6, host, &ipv6) == 1 else { return false }
            let bytes = withUnsafeBytes(of: &ipv6) { Array($0) }
            let loopback: [UInt8] = Array(repeating: 0, count: 15) + [1]
            let mappedPrefix: [UInt8] = Array(repeating: 0, count: 10) + [0xFF, 0xFF]
            return bytes == loopback || (Array(bytes.prefix(12)) == mappedPrefix && bytes[12] == 127)
        }
    }
}
