internal import COpenSSL
import FoundationEssentials
import IoTHubProtocol

/// Whom the client trusts when it opens TLS to the hub, decided once and applied by each of
/// its three TLS stacks: OpenSSL for libmosquitto (``TLSContext``); NIOSSL for the WebSocket and
/// proxy tunnel (`NIOSSLContext.forTunnel`), whose certificate check is the same OpenSSL
/// verification (``TLSContext/rejectionReason(forServerChain:)``); and libcurl for file upload
/// (``HTTPSClient``), which checks the host of each URL it is given. Every stack
/// - accepts TLS 1.2 or newer only;
/// - checks the certificate chain against ``extraTrustedCertificatesPEM`` alone when it is
///   given (as the Python SDK's `server_verification_cert` does), or against the system's CAs
///   (OpenSSL's default locations, which `SSL_CERT_FILE` and `SSL_CERT_DIR` move) when it is
///   not, or against both when the configuration says so
///   (``DeviceClientConfiguration/serverVerificationCertificateAddsToSystemStore``): one trust
///   store, ``makeTrustStore()``, used by every stack;
/// - checks that the server's certificate names ``peer``, the host the client was configured to
///   reach, and never the address the socket happens to be connected to (through a proxy that
///   is the proxy);
/// - offers only the suites and protocol versions of the ``ciphers`` when the configuration
///   names any (``CipherSelection``), and the client certificate of an X.509 identity.
/// See docs/ARCHITECTURE.md, "TLS".
struct TLSPolicy: Sendable, Hashable {
    /// The name the server's certificate must carry.
    var peer: PeerName
    /// CAs to trust (`server_verification_cert`): instead of the system's, or besides them
    /// when ``trustsSystemCertificates``.
    var extraTrustedCertificatesPEM: String?
    /// Whether the system's CAs are trusted: always without ``extraTrustedCertificatesPEM``,
    /// with it only when asked for.
    var trustsSystemCertificates: Bool
    /// The suites the connection may use (`cipher`); nil: each stack's defaults.
    var ciphers: CipherSelection?
    /// The device's certificate and key, for X.509 identities.
    var clientCertificate: X509Credential?

    /// The policy for the MQTT and HTTPS connections of a client configured with `configuration`.
    init(configuration: DeviceClientConfiguration, hostName: String, clientCertificate: X509Credential?)
        throws(IoTHubError)
    {
        peer = PeerName(host: configuration.gatewayHostName ?? hostName)
        extraTrustedCertificatesPEM = configuration.serverVerificationCertificate.flatMap { $0.isEmpty ? nil : $0 }
        trustsSystemCertificates =
            extraTrustedCertificatesPEM == nil || configuration.serverVerificationCertificateAddsToSystemStore
        if let cipher = configuration.cipher, !cipher.isEmpty {
            ciphers = try CipherSelection(cipher)
        }
        self.clientCertificate = clientCertificate
    }

    init(
        peer: PeerName, extraTrustedCertificatesPEM: String? = nil, trustsSystemCertificates: Bool? = nil,
        ciphers: CipherSelection? = nil,
        clientCertificate: X509Credential? = nil
    ) {
        self.peer = peer
        self.extraTrustedCertificatesPEM = extraTrustedCertificatesPEM
        self.trustsSystemCertificates = trustsSystemCertificates ?? (extraTrustedCertificatesPEM == nil)
        self.ciphers = ciphers
        self.clientCertificate = clientCertificate
    }
}

/// The identity a server's certificate must prove: a DNS name (matched against the
/// certificate's DNS names, wildcards only as a whole left-most label) or an IP address
/// (matched against its IP address entries only).
enum PeerName: Sendable, Hashable, CustomStringConvertible {
    case dnsName(String)
    /// An IPv4 or IPv6 address in the text form it was given in (without brackets).
    case ipAddress(String)

    /// `host` as configured: an IP literal (IPv6 with or without brackets) or a DNS name.
    init(host: String) {
        var literal = host
        if literal.hasPrefix("["), literal.hasSuffix("]") { literal = String(literal.dropFirst().dropLast()) }
        if IPAddressLiteral.ipv4(literal) != nil || IPAddressLiteral.ipv6(literal) != nil {
            self = .ipAddress(literal)
        } else {
            self = .dnsName(host)
        }
    }

    var description: String {
        switch self {
        case .dnsName(let name): name
        case .ipAddress(let address): address
        }
    }

    /// The name to send in the TLS server-name extension, which carries DNS names only.
    var serverNameIndication: String? {
        if case .dnsName(let name) = self { return name }
        return nil
    }

    /// OpenSSL's host-name matching rules: no partial-label wildcards (`f*.example.com`), as
    /// RFC 6125 recommends.
    static let hostCheckFlags = UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS)

    /// Sets this peer as the name OpenSSL's verification checks on `parameters`.
    func configure(_ parameters: OpaquePointer) -> Bool {
        switch self {
        case .dnsName(let name):
            X509_VERIFY_PARAM_set_hostflags(parameters, Self.hostCheckFlags)
            return X509_VERIFY_PARAM_set1_host(parameters, name, name.utf8.count) == 1
        case .ipAddress(let address):
            return X509_VERIFY_PARAM_set1_ip_asc(parameters, address) == 1
        }
    }
}
