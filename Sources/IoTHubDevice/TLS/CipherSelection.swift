import IoTHubProtocol

/// The `cipher` option, read once for every TLS stack of the client (docs/ARCHITECTURE.md,
/// "TLS"). The option is an OpenSSL cipher list (names and keywords separated by colons, as
/// Python's `ssl.SSLContext.set_ciphers` takes) that may also name TLS 1.3 suites
/// (`TLS_AES_256_GCM_SHA384`, …). A connection uses a suite from the list and nothing else:
/// - the TLS 1.2 part restricts TLS 1.2, the TLS 1.3 part restricts TLS 1.3;
/// - a list that names no TLS 1.3 suite keeps the connection at TLS 1.2 (Python's
///   `set_ciphers` would leave TLS 1.3 open with its default suites);
/// - a list of TLS 1.3 suites only asks for TLS 1.3.
struct CipherSelection: Sendable, Hashable {
    /// TLS 1.3 suites OpenSSL implements, by the names OpenSSL and IANA give them.
    static let tls13Suites: Set<String> = [
        "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256",
    ]
    /// The TLS 1.3 suites BoringSSL (the WebSocket and proxy tunnel's TLS) always offers; it
    /// cannot leave any of them out.
    static let boringSSLTLS13Suites: Set<String> = [
        "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
    ]

    /// The TLS 1.2 part, an OpenSSL cipher string; nil when the list names only TLS 1.3 suites.
    let tls12: String?
    /// The TLS 1.3 suites named, in the list's order; empty when the list names none.
    let tls13: [String]

    /// Whether TLS 1.2 may be negotiated.
    var allowsTLS12: Bool { tls12 != nil }
    /// Whether TLS 1.3 may be negotiated.
    var allowsTLS13: Bool { !tls13.isEmpty }
    /// The TLS 1.3 part as OpenSSL's `SSL_CTX_set_ciphersuites` and libcurl's
    /// `CURLOPT_TLS13_CIPHERS` take it.
    var tls13List: String { tls13.joined(separator: ":") }

    /// Splits `list` (colons, commas or spaces between entries, as OpenSSL accepts). Names that
    /// start with `TLS_` are TLS 1.3 suites and must be ones OpenSSL knows; every other entry is
    /// left to the TLS 1.2 cipher string, which each stack checks when it is configured.
    init(_ list: String) throws(IoTHubError) {
        let entries = list.split(whereSeparator: { $0 == ":" || $0 == "," || $0 == " " }).map(String.init)
        guard !entries.isEmpty else {
            throw .valueError(field: "cipher", reason: "names no cipher")
        }
        var tls12: [String] = []
        var tls13: [String] = []
        for entry in entries {
            if entry.hasPrefix("TLS_") {
                guard Self.tls13Suites.contains(entry) else {
                    throw .valueError(
                        field: "cipher",
                        reason:
                            "'\(entry)' is not a TLS 1.3 suite; those are \(Self.tls13Suites.sorted().joined(separator: ", "))"
                    )
                }
                if !tls13.contains(entry) { tls13.append(entry) }
            } else {
                tls12.append(entry)
            }
        }
        self.tls12 = tls12.isEmpty ? nil : tls12.joined(separator: ":")
        self.tls13 = tls13
    }
}
