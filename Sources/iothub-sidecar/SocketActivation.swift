import Sidecar

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// systemd socket activation: the listening socket systemd opened (a `.socket` unit, see
/// `deploy/iothub-sidecar.socket`) arrives as descriptor 3, announced by `LISTEN_FDS` and
/// `LISTEN_PID` (sd_listen_fds(3)). The variables are for this process only: when `LISTEN_PID`
/// names another process they are ignored, and once taken they are removed from the
/// environment so that nothing the sidecar starts sees them.
enum SocketActivation {
    /// The first passed descriptor (`SD_LISTEN_FDS_START`).
    static let firstDescriptor: CInt = 3

    /// The inherited listener and the address it is bound to, or nil when none was passed.
    static func listener(environment: [String: String]) throws(CommandFailure) -> (
        descriptor: CInt, address: ListenAddress
    )? {
        guard let pidText = environment["LISTEN_PID"], let countText = environment["LISTEN_FDS"] else { return nil }
        guard let pid = Int32(pidText), pid == getpid() else { return nil }
        guard let count = Int(countText), count >= 0 else {
            throw CommandFailure("LISTEN_FDS must be a number of sockets, not '\(countText)'")
        }
        if count == 0 { return nil }
        guard count == 1 else {
            throw CommandFailure(
                "systemd passed \(count) sockets (LISTEN_FDS) and the sidecar serves one: give its socket unit a single ListenStream="
            )
        }
        let descriptor = firstDescriptor
        var listening: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        guard getsockopt(descriptor, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) == 0, listening == 1 else {
            throw CommandFailure(
                "descriptor 3, passed by systemd (LISTEN_FDS), is not a listening stream socket: the socket unit needs ListenStream="
            )
        }
        guard let address = boundAddress(descriptor) else {
            throw CommandFailure("descriptor 3, passed by systemd (LISTEN_FDS), is neither a unix nor a TCP socket")
        }
        _ = fcntl(descriptor, F_SETFD, fcntl(descriptor, F_GETFD) | FD_CLOEXEC)
        for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] { unsetenv(name) }
        return (descriptor, address)
    }

    /// What a socket is bound to, as a listen address.
    private static func boundAddress(_ descriptor: CInt) -> ListenAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard named == 0 else { return nil }
        switch CInt(storage.ss_family) {
        case AF_UNIX:
            let path = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_un.self, capacity: 1) { address in
                    withUnsafeBytes(of: address.pointee.sun_path) { bytes in
                        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
                    }
                }
            }
            return .unix(path: path.isEmpty ? "(unnamed)" : path)
        case AF_INET:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { address in
                    var host = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
                    var ip = address.pointee.sin_addr
                    inet_ntop(AF_INET, &ip, &host, socklen_t(host.count))
                    return .tcp(
                        host: String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self),
                        port: Int(UInt16(bigEndian: address.pointee.sin_port)))
                }
            }
        case AF_INET6:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { address in
                    var host = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
                    var ip = address.pointee.sin6_addr
                    inet_ntop(AF_INET6, &ip, &host, socklen_t(host.count))
                    return .tcp(
                        host: String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self),
                        port: Int(UInt16(bigEndian: address.pointee.sin6_port)))
                }
            }
        default:
            return nil
        }
    }
}
