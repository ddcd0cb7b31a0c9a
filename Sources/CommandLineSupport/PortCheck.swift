#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Finds a busy port before anything starts, so that the first thing a newcomer reads is which
/// port is taken and which flag moves it, not what the half-started rest of the process logged.
/// (Only a check: the real bind can still lose a race, and then says so in its own words.)
package enum PortCheck {
    /// Whether binding `host:port` (TCP) fails now because the address is in use.
    package static func isInUse(host: String, port: Int) -> Bool {
        guard port != 0 else { return false }
        var hints = addrinfo()
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        hints.ai_socktype = CInt(SOCK_STREAM.rawValue)
        var results: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &results) == 0, let first = results else { return false }
        defer { freeaddrinfo(results) }
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let current = entry {
            let file = socket(current.pointee.ai_family, current.pointee.ai_socktype, current.pointee.ai_protocol)
            if file >= 0 {
                var one: CInt = 1
                // As the real listeners do: a port in TIME_WAIT is not busy.
                setsockopt(file, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
                let bound = bind(file, current.pointee.ai_addr, current.pointee.ai_addrlen)
                let code = errno
                close(file)
                if bound != 0, code == EADDRINUSE { return true }
            }
            entry = current.pointee.ai_next
        }
        return false
    }

    /// The one line for a busy port.
    /// - Parameters:
    ///   - what: what could not listen, such as `the local hub's MQTT listener`.
    ///   - flag: the option (and variable) that moves it.
    package static func busy(_ what: String, host: String, port: Int, flag: String) -> String {
        busy(what, address: host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)", flag: flag)
    }

    package static func busy(_ what: String, address: String, flag: String) -> String {
        "\(what) cannot listen on \(address): the port is in use, probably by another iothub-sidecar already running (scripts/run?). Stop it, or choose another with \(flag)"
    }
}
