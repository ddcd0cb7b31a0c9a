public import FoundationEssentials
public import IoTHubProtocol

/// The IoT Edge security daemon's workload API, as a module reaches it (the Python SDK's
/// `IoTEdgeHsm`): `GET /trust-bundle` gives the CA certificates the Edge hub's server
/// certificate chains to, and `POST /modules/{module}/genid/{generation}/sign` signs a SAS
/// token's text with the module's key, which the module never sees.
///
/// The API is plain HTTP, over a unix socket (`unix:///var/run/iotedge/workload.sock`, the
/// usual `IOTEDGE_WORKLOADURI`) or TCP (`http://host:port`). Each request is a libcurl transfer
/// on the HTTPS client's own queue, never on Swift's cooperative pool.
public struct EdgeWorkload: Sendable, Hashable {
    /// The workload URI as given (`IOTEDGE_WORKLOADURI`).
    public let uri: String
    /// The API version of every request (`IOTEDGE_APIVERSION`).
    public let apiVersion: String
    /// The module whose key signs (`IOTEDGE_MODULEID`).
    public let moduleId: String
    /// The module's generation id (`IOTEDGE_MODULEGENERATIONID`): the daemon signs only for
    /// the current generation of the module.
    public let generationId: String

    /// The socket the requests go through (nil for `http://`).
    let socketPath: String?
    /// `http://host[:port]` that requests are addressed to.
    let base: String

    /// Checks the URI: `unix:///absolute/path` or `http://host[:port]`.
    public init(uri: String, apiVersion: String, moduleId: String, generationId: String) throws(IoTHubError) {
        for (field, value) in [
            ("IOTEDGE_APIVERSION", apiVersion), ("IOTEDGE_MODULEID", moduleId),
            ("IOTEDGE_MODULEGENERATIONID", generationId),
        ] where value.isEmpty {
            throw .valueError(field: field, reason: "is empty")
        }
        if uri.hasPrefix("unix://") {
            let path = String(uri.dropFirst("unix://".count))
            guard path.hasPrefix("/"), path.count > 1 else {
                throw .valueError(field: "IOTEDGE_WORKLOADURI", reason: "a unix:// URI needs an absolute socket path")
            }
            socketPath = path
            base = "http://localhost"
        } else if uri.hasPrefix("http://") {
            let rest = uri.dropFirst("http://".count)
            let authority = rest.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            guard !authority.isEmpty else {
                throw .valueError(field: "IOTEDGE_WORKLOADURI", reason: "an http:// URI needs a host")
            }
            socketPath = nil
            base = "http://\(authority)"
        } else {
            throw .valueError(field: "IOTEDGE_WORKLOADURI", reason: "is neither unix:///path nor http://host:port")
        }
        self.uri = uri
        self.apiVersion = apiVersion
        self.moduleId = moduleId
        self.generationId = generationId
    }

    /// The CA certificates (PEM) the Edge hub's certificate chains to: the module's
    /// `server_verification_cert`.
    public func trustBundle() async throws(IoTHubError) -> String {
        let response = try await request(method: "GET", path: "/trust-bundle", body: nil)
        guard let certificate = response["certificate"], case .string(let pem) = certificate, !pem.isEmpty else {
            throw .clientError("the IoT Edge workload API's trust bundle has no certificate")
        }
        return pem
    }

    /// The base64 HMAC-SHA256 signature of `text` under the module's primary key.
    public func sign(_ text: String) async throws(IoTHubError) -> String {
        let body = JSONValue.object([
            "keyId": .string("primary"), "algo": .string("HMACSHA256"),
            "data": .string(Data(text.utf8).base64EncodedString()),
        ]).encoded()
        let path = "/modules/\(PercentEncoding.encode(moduleId))/genid/\(PercentEncoding.encode(generationId))/sign"
        let response = try await request(method: "POST", path: path, body: body)
        guard let digest = response["digest"], case .string(let signature) = digest,
            let bytes = Data(base64Encoded: signature), bytes.count == 32
        else {
            throw .clientError("the IoT Edge workload API's signature is not a base64 HMAC-SHA256 digest")
        }
        return signature
    }

    /// A SAS token for `resourceURI` expiring `timeToLive` seconds from now, signed by the
    /// workload API.
    public func sasToken(resourceURI: String, timeToLive: Int, now: Date = Date()) async throws(IoTHubError)
        -> SASToken
    {
        let expiry = Int(now.timeIntervalSince1970) + timeToLive
        let text = SASToken.stringToSign(encodedResourceURI: PercentEncoding.encode(resourceURI), expiry: expiry)
        return SASToken(resourceURI: resourceURI, expiry: expiry, signature: try await sign(text))
    }

    private func request(method: String, path: String, body: Data?) async throws(IoTHubError) -> JSONValue {
        let client = HTTPSClient(
            policy: Self.plainPolicy, trustStore: try Self.plainTrustStore(), proxy: nil, timeoutSeconds: 30,
            unixSocketPath: socketPath)
        var headers = ["Accept": "application/json"]
        if body != nil { headers["Content-Type"] = "application/json" }
        let url = "\(base)\(path)?api-version=\(PercentEncoding.encode(apiVersion))"
        let response: HTTPSClient.Response
        do throws(IoTHubError) {
            response = try await client.send(method: method, url: url, headers: headers, body: body)
        } catch {
            throw .connectionFailedError("the IoT Edge workload API at \(uri) cannot be reached: \(error)")
        }
        guard (200..<300).contains(response.status) else {
            let text = String(decoding: response.body.prefix(512), as: UTF8.self)
            if [401, 403, 404].contains(response.status) {
                throw .credentialError(
                    "the IoT Edge workload API refused \(method) \(path): \(response.status) \(text)")
            }
            throw .serviceError(
                status: response.status, message: "the IoT Edge workload API: \(method) \(path): \(text)")
        }
        do throws(IoTHubError) {
            return try JSONValue(parsing: response.body)
        } catch {
            throw .clientError("the IoT Edge workload API answered \(method) \(path) with something other than JSON")
        }
    }

    /// The workload API is plain HTTP: no certificate is ever checked, so the policy trusts
    /// nothing.
    private static let plainPolicy = TLSPolicy(peer: .dnsName("localhost"), trustsSystemCertificates: false)

    private static func plainTrustStore() throws(IoTHubError) -> TrustStore {
        try TrustStore(policy: plainPolicy)
    }
}
