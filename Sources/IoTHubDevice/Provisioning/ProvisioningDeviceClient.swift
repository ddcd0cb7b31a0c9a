import AsyncPrimitives
import FoundationEssentials
public import IoTHubProtocol
public import Logging
import NIOConcurrencyHelpers

/// A device's client of the Azure IoT Hub Device Provisioning Service (DPS): it registers with
/// an ID scope and a registration id, proving itself with a symmetric key or an X.509
/// certificate, and learns which hub it belongs to and under which device id — the Python
/// SDK's `ProvisioningDeviceClient` (see docs/ARCHITECTURE.md, "Device Provisioning Service").
///
/// MQTT 3.1.1 through libmosquitto, over TLS to port 8883 or through the same WebSocket and
/// proxy tunnel and the same TLS policy as ``IoTHubDeviceClient``: `websockets`,
/// `proxy_options`, `server_verification_cert`, `cipher`, `keep_alive`, `sastoken_ttl` and
/// `product_info` come from the ``DeviceClientConfiguration`` (its `gateway_hostname` is not
/// used: DPS is reached at the provisioning host). Each ``register(payload:)`` opens its own
/// connection and closes it before returning, and takes at most the configuration's operation
/// timeout.
public final class ProvisioningDeviceClient: Sendable {
    /// How the device proves who it is.
    enum Credential: Sendable {
        case symmetricKey(String)
        case x509(X509Credential)
    }

    /// DPS's host name (`global.azure-devices-provisioning.net` in Azure).
    public let provisioningHost: String
    public let registrationId: String
    public let idScope: String
    public let configuration: DeviceClientConfiguration
    /// The global DPS endpoint of Azure.
    public static let globalEndpoint = "global.azure-devices-provisioning.net"

    let credential: Credential
    private let logger: Logger
    private let nextRequestId = NIOLockedValueBox(0)

    init(
        provisioningHost: String, registrationId: String, idScope: String, credential: Credential,
        configuration: DeviceClientConfiguration, logger: Logger
    ) throws(IoTHubError) {
        guard !provisioningHost.isEmpty, !provisioningHost.contains("/") else {
            throw .valueError(field: "provisioning_host", reason: "is not a host name")
        }
        guard ProvisioningWire.isValidRegistrationId(registrationId) else {
            throw .valueError(
                field: "registration_id",
                reason:
                    "is invalid: use 1 to 128 lower-case letters, digits or -._:, beginning and ending with a letter or digit"
            )
        }
        guard !idScope.isEmpty, idScope.allSatisfy({ $0.isLetter || $0.isNumber }), idScope.count <= 64 else {
            throw .valueError(field: "id_scope", reason: "is not an ID scope (letters and digits, such as 0ne00000000)")
        }
        var configuration = configuration
        configuration.gatewayHostName = nil
        try configuration.validate()
        if case .symmetricKey(let key) = credential {
            // Sign once to prove the key is usable.
            _ = try SASToken(
                resourceURI: ProvisioningWire.resourceURI(idScope: idScope, registrationId: registrationId), key: key,
                timeToLive: 60)
        }
        self.provisioningHost = provisioningHost
        self.registrationId = registrationId
        self.idScope = idScope
        self.credential = credential
        self.configuration = configuration
        self.logger = logger
    }

    /// `create_from_symmetric_key`: `symmetricKey` is an individual enrollment's key, or the key
    /// derived from an enrollment group's key with ``deriveDeviceKey(groupKey:registrationId:)``.
    public static func fromSymmetricKey(
        provisioningHost: String = globalEndpoint, registrationId: String, idScope: String, symmetricKey: String,
        configuration: DeviceClientConfiguration = DeviceClientConfiguration(),
        logger: Logger = Logger(label: "iothub-provisioning")
    ) throws(IoTHubError) -> ProvisioningDeviceClient {
        try ProvisioningDeviceClient(
            provisioningHost: provisioningHost, registrationId: registrationId, idScope: idScope,
            credential: .symmetricKey(symmetricKey),
            configuration: configuration, logger: logger)
    }

    /// `create_from_x509_certificate`: the certificate's common name is the registration id.
    public static func fromX509Certificate(
        provisioningHost: String = globalEndpoint, registrationId: String, idScope: String, x509: X509Credential,
        configuration: DeviceClientConfiguration = DeviceClientConfiguration(),
        logger: Logger = Logger(label: "iothub-provisioning")
    ) throws(IoTHubError) -> ProvisioningDeviceClient {
        try ProvisioningDeviceClient(
            provisioningHost: provisioningHost, registrationId: registrationId, idScope: idScope,
            credential: .x509(x509),
            configuration: configuration, logger: logger)
    }

    /// The key of a device in a symmetric-key enrollment group: base64(HMAC-SHA256(key:
    /// base64-decoded group key, message: the registration id)), as Azure's documentation and
    /// SDKs derive it. Throws `ValueError` when the group key is not base64.
    public static func deriveDeviceKey(groupKey: String, registrationId: String) throws(IoTHubError) -> String {
        try EnrollmentGroupKey.deviceKey(groupKey: groupKey, registrationId: registrationId)
    }

    /// The credential to connect to the assigned hub with: the same key or certificate.
    public var deviceCredential: DeviceCredential {
        switch credential {
        case .symmetricKey(let key): .symmetricKey(key)
        case .x509(let x509): .x509(x509)
        }
    }

    /// `register()`: registers with DPS and returns the assignment. `payload` is the custom
    /// `provisioning_payload` sent with the request.
    ///
    /// Errors, as the Python SDK raises them: a refused CONNECT (CONNACK 4/5) or a `401` answer
    /// → `CredentialError`; no connection → `ConnectionFailedError`; an error status from DPS
    /// (300–428) or a registration that `failed` → `ServiceError`; a status DPS should not give
    /// (`disabled`: the enrollment is disabled) → `ClientError`; no result within the operation
    /// timeout, even after DPS's `retry-after` waits (throttling, `assigning`) → `OperationTimeout`.
    public func register(payload: JSONValue? = nil) async throws(IoTHubError) -> RegistrationResult {
        let session = try ProvisioningSession(client: self)
        let timeout = configuration.operationTimeout
        let outcome: Result<RegistrationResult, IoTHubError>
        do throws(IoTHubError) {
            outcome = .success(
                try await withTimeout(
                    timeout,
                    timeoutError: { .operationTimeout("DPS did not finish the registration within \(timeout)") },
                    { () async throws(IoTHubError) -> RegistrationResult in try await session.run(payload: payload) }))
        } catch {
            outcome = .failure(error)
        }
        await session.close()
        switch outcome {
        case .success(let result):
            logger.info(
                "registered with DPS",
                metadata: [
                    "registration": "\(registrationId)", "hub": "\(result.assignedHub ?? "")",
                    "device": "\(result.deviceId ?? "")",
                ])
        case .failure(let error):
            logger.info(
                "registration with DPS failed", metadata: ["registration": "\(registrationId)", "error": "\(error)"])
        }
        return try outcome.get()
    }

    /// A new request id (`$rid`) for this client.
    func requestId() -> String {
        nextRequestId.withLockedValue { next in
            next += 1
            return String(next)
        }
    }
}

/// One registration's MQTT connection: CONNECT, SUBSCRIBE, the register request and the polls.
/// The MQTT callbacks only complete the CONNACK and answer tables.
private final class ProvisioningSession: Sendable {
    private let client: ProvisioningDeviceClient
    private let mqtt: MosquittoClient
    private let tunnelPlan: TunnelPlan?
    private let socketDirectory: PrivateSocketDirectory?
    private let tunnel = NIOLockedValueBox<MQTTTunnel?>(nil)
    /// Whether DPS refused the CONNECT: it then closes the connection itself, and there is
    /// nothing to disconnect.
    private let refused = NIOLockedValueBox(false)
    /// The CONNACK's return code, or why the connection ended first (key 0).
    private let connack: PendingReplies<Int, Int32, IoTHubError>
    /// DPS's answers by `$rid`.
    private let responses: PendingReplies<String, ProvisioningWire.Response, IoTHubError>

    /// What the Python SDK waits between polls when DPS does not say.
    static let defaultRetryAfter = 2

    init(client: ProvisioningDeviceClient) throws(IoTHubError) {
        self.client = client
        var certificate: X509Credential?
        if case .x509(let x509) = client.credential { certificate = x509 }
        let policy = try TLSPolicy(
            configuration: client.configuration, hostName: client.provisioningHost, clientCertificate: certificate)
        let tls = try TLSContext(policy: policy)
        tunnelPlan = try TunnelPlan.forClient(
            configuration: client.configuration, host: client.provisioningHost, policy: policy, verifier: tls)
        socketDirectory = tunnelPlan == nil ? nil : try PrivateSocketDirectory()
        let connack = PendingReplies<Int, Int32, IoTHubError>(keepingEarlyReplies: true)
        let responses = PendingReplies<String, ProvisioningWire.Response, IoTHubError>(keepingEarlyReplies: true)
        self.connack = connack
        self.responses = responses
        mqtt = try MosquittoClient(
            clientId: client.registrationId, tls: tunnelPlan == nil ? tls : nil, maximumInflight: 10,
            acknowledgementTimeout: client.configuration.operationTimeout
        ) { event in
            switch event {
            case .connected(let returnCode):
                connack.complete(0, with: .success(returnCode))
            case .disconnected(_, let reason):
                let detail = reason.map { ": \($0)" } ?? ""
                connack.complete(
                    0, with: .failure(.connectionFailedError("DPS closed the connection before accepting it\(detail)")))
                responses.failAll(with: .connectionDroppedError("the connection to DPS ended\(detail)"))
            case .message(let topic, let payload):
                if let response = ProvisioningWire.Response(topic: topic, body: payload) {
                    responses.complete(response.rid, with: .success(response))
                }
            }
        }
    }

    /// Connects, subscribes, registers and polls until DPS gives the final status.
    func run(payload: JSONValue?) async throws(IoTHubError) -> RegistrationResult {
        try await connect()
        let granted = try await mqtt.subscribe([ProvisioningWire.responseFilter])
        guard granted.first.map({ $0 <= 2 }) ?? false else {
            throw .clientError("DPS refused the subscription to \(ProvisioningWire.responseFilter)")
        }
        let body = ProvisioningWire.registerBody(registrationId: client.registrationId, payload: payload)
        var response = try await request { rid in (ProvisioningWire.registerTopic(rid: rid), body) }
        while true {
            let document = try Self.document(of: response)
            let status: String
            if case .string(let text)? = document["status"] { status = text } else { status = "" }
            switch status {
            case "assigning":
                guard case .string(let operationId)? = document["operationId"], !operationId.isEmpty else {
                    throw .clientError("DPS answered 'assigning' without an operation id")
                }
                try await pause(seconds: response.retryAfterSeconds ?? Self.defaultRetryAfter)
                response = try await request { rid in
                    (ProvisioningWire.operationStatusTopic(rid: rid, operationId: operationId), Data(" ".utf8))
                }
            case "assigned":
                return RegistrationResult(operationStatus: document, registrationId: client.registrationId)
            case "failed":
                let result = RegistrationResult(operationStatus: document, registrationId: client.registrationId)
                let status = result.errorCode.map { $0 / 1000 }.flatMap { (400...599).contains($0) ? $0 : nil } ?? 400
                throw .serviceError(
                    status: status,
                    message:
                        "the registration of '\(client.registrationId)' failed: \(result.errorMessage ?? "no reason given") (error code \(result.errorCode.map(String.init) ?? "none"))"
                )
            default:
                throw .clientError(
                    status == "disabled"
                        ? "DPS answered 'disabled': the enrollment of '\(client.registrationId)' is disabled"
                        : "DPS answered an invalid registration status '\(status.prefix(40))'")
            }
        }
    }

    /// Sends one request (a new `$rid` each time) and returns DPS's 200 or 202 answer; after a
    /// throttling or server error (429 and up) asks again once `retry-after` has passed.
    private func request(_ make: (String) -> (topic: String, body: Data)) async throws(IoTHubError)
        -> ProvisioningWire.Response
    {
        while true {
            let rid = client.requestId()
            let (topic, body) = make(rid)
            try await mqtt.publish(topic: topic, payload: body)
            let response = try await responses.reply(to: rid) {
                .operationCancelled("the registration was cancelled or timed out")
            }
            switch response.status {
            case 200..<300:
                return response
            case 401:
                throw .credentialError(
                    "DPS refused the credentials of '\(client.registrationId)' (401\(Self.detail(of: response)))")
            case 429...:
                try await pause(seconds: response.retryAfterSeconds ?? Self.defaultRetryAfter)
            default:
                throw .serviceError(
                    status: response.status, message: "DPS answered \(response.status)\(Self.detail(of: response))",
                    retryAfterSeconds: response.retryAfterSeconds)
            }
        }
    }

    /// Waits before asking again; the registration's timeout bounds it (it cancels the wait).
    private func pause(seconds: Int) async throws(IoTHubError) {
        do {
            try await Task.sleep(for: .seconds(min(max(seconds, 0), 3600)))
        } catch {
            throw .operationCancelled("the registration was cancelled or timed out")
        }
    }

    /// The answer's body as JSON.
    private static func document(of response: ProvisioningWire.Response) throws(IoTHubError) -> JSONValue {
        do throws(IoTHubError) {
            return try JSONValue(parsing: response.body)
        } catch {
            throw .clientError("DPS answered \(response.status) with a body that is not JSON")
        }
    }

    /// `: message (error code n)` from an error answer's body, when it has them.
    private static func detail(of response: ProvisioningWire.Response) -> String {
        guard let document = try? JSONValue(parsing: response.body) else { return "" }
        var parts: [String] = []
        if case .string(let message)? = document["message"] { parts.append(String(message.prefix(200))) }
        if let code = document["errorCode"]?.intValue { parts.append("error code \(code)") }
        return parts.isEmpty ? "" : ": " + parts.joined(separator: ", ")
    }

    /// TCP (or the tunnel), TLS, CONNECT and the CONNACK.
    private func connect() async throws(IoTHubError) {
        let configuration = client.configuration
        var host = client.provisioningHost
        var port = configuration.mqttPort
        if let tunnelPlan, let socketDirectory {
            let opened = try await MQTTTunnel.open(tunnelPlan, socketPath: socketDirectory.socketPath)
            tunnel.withLockedValue { $0 = opened }
            host = socketDirectory.socketPath
            port = 0
        }
        let password: String?
        switch client.credential {
        case .symmetricKey(let key):
            password = try SASToken(
                resourceURI: ProvisioningWire.resourceURI(
                    idScope: client.idScope, registrationId: client.registrationId), key: key,
                timeToLive: configuration.sasTokenTimeToLive, keyName: ProvisioningWire.tokenKeyName
            ).string
        case .x509:
            password = nil
        }
        let username = ProvisioningWire.username(
            idScope: client.idScope, registrationId: client.registrationId, productInfo: configuration.productInfo)
        try await mqtt.connect(
            host: host, port: port, keepAlive: configuration.keepAlive, username: username, password: password,
            reconnect: false)
        let code = try await connack.reply(to: 0) { .operationCancelled("the registration was cancelled or timed out") }
        refused.withLockedValue { $0 = code != 0 }
        switch code {
        case 0:
            mqtt.openForPublishing()
        case 4, 5:
            throw .credentialError("DPS refused the credentials of '\(client.registrationId)' (CONNACK \(code))")
        case 2:
            throw .connectionFailedError(
                "DPS refused the registration id '\(client.registrationId)' as client id (CONNACK 2)")
        default:
            throw .connectionFailedError("DPS refused the connection (CONNACK \(code))")
        }
    }

    /// Disconnects (or, after a refused CONNECT, joins the network thread) and closes the tunnel.
    func close() async {
        if refused.withLockedValue({ $0 }) {
            await mqtt.stopLoop()
        } else {
            await mqtt.disconnect()
        }
        tunnel.withLockedValue { tunnel in
            defer { tunnel = nil }
            return tunnel
        }?.close()
    }
}
