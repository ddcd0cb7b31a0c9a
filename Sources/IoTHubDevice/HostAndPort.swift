/// `host:port` as it appears in a URL's authority, an HTTP request target or a `Host` header,
/// and in messages that name an endpoint: an IPv6 address goes in brackets.
func hostAndPort(_ host: String, _ port: Int) -> String {
    host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
}
