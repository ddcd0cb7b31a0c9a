public import FoundationEssentials
public import IoTHubProtocol
public import Logging

// MARK: IoT Edge modules

extension IoTHubDeviceClient {
    /// The `IOTEDGE_*` variables the IoT Edge runtime sets in a module's container.
    static let edgeVariables = [
        "IOTEDGE_IOTHUBHOSTNAME", "IOTEDGE_DEVICEID", "IOTEDGE_MODULEID", "IOTEDGE_GATEWAYHOSTNAME",
        "IOTEDGE_MODULEGENERATIONID", "IOTEDGE_WORKLOADURI", "IOTEDGE_APIVERSION",
    ]

    /// `IoTHubModuleClient.create_from_edge_environment`: a module client made from the IoT Edge
    /// runtime's environment. With the `IOTEDGE_*` variables, the client trusts the workload
    /// API's trust bundle, connects to the Edge hub (`IOTEDGE_GATEWAYHOSTNAME`) and has each SAS
    /// token signed by the workload API (``DeviceCredential/edgeWorkload(_:)``); without them,
    /// for local debugging, `EdgeHubConnectionString` (with `GatewayHostName` and a key) and
    /// the CA file `EdgeModuleCACertificateFile`.
    ///
    /// The environment decides trust and the gateway, so a configuration that names
    /// `server_verification_cert` or `gateway_hostname` is refused, as in the Python SDK.
    /// - Throws: ``IoTHubError/clientError(_:)`` when neither set of variables is complete;
    ///   ``IoTHubError/valueError(field:reason:)`` for a bad value; the workload API's errors
    ///   when the trust bundle cannot be fetched.
    public static func fromEdgeEnvironment(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        configuration: DeviceClientConfiguration = DeviceClientConfiguration(),
        logger: Logger = Logger(label: "iothub-device")
    ) async throws(IoTHubError) -> IoTHubDeviceClient {
        guard configuration.serverVerificationCertificate == nil else {
            throw .valueError(
                field: "server_verification_cert", reason: "is not taken from the IoT Edge environment's client")
        }
        guard configuration.gatewayHostName == nil else {
            throw .valueError(field: "gateway_hostname", reason: "is not taken from the IoT Edge environment's client")
        }
        var configuration = configuration
        // An empty variable counts as unset.
        let environment = environment.filter { !$0.value.isEmpty }
        let present = edgeVariables.compactMap { name in environment[name].map { (name, $0) } }
        if present.count == edgeVariables.count {
            let value = Dictionary(uniqueKeysWithValues: present)
            let workload = try EdgeWorkload(
                uri: value["IOTEDGE_WORKLOADURI", default: ""], apiVersion: value["IOTEDGE_APIVERSION", default: ""],
                moduleId: value["IOTEDGE_MODULEID", default: ""],
                generationId: value["IOTEDGE_MODULEGENERATIONID", default: ""])
            configuration.gatewayHostName = value["IOTEDGE_GATEWAYHOSTNAME"]
            configuration.serverVerificationCertificate = try await workload.trustBundle()
            return try IoTHubDeviceClient(
                hostName: value["IOTEDGE_IOTHUBHOSTNAME", default: ""],
                deviceId: value["IOTEDGE_DEVICEID", default: ""],
                moduleId: workload.moduleId, credential: .edgeWorkload(workload), configuration: configuration,
                logger: logger)
        }
        guard let text = environment["EdgeHubConnectionString"], let caFile = environment["EdgeModuleCACertificateFile"]
        else {
            let missing = edgeVariables.filter { environment[$0] == nil }.joined(separator: ", ")
            throw .clientError(
                "the IoT Edge environment is not configured: \(missing) not set, and no EdgeHubConnectionString with EdgeModuleCACertificateFile"
            )
        }
        let connectionString = try ConnectionString(parsing: text)
        guard let deviceId = connectionString.deviceId, let moduleId = connectionString.moduleId,
            let gateway = connectionString.gatewayHostName, case .sharedAccessKey(let key) = connectionString.credential
        else {
            throw .valueError(
                field: "EdgeHubConnectionString",
                reason: "needs HostName, DeviceId, ModuleId, GatewayHostName and SharedAccessKey")
        }
        let certificate: Data
        do {
            certificate = try Data(contentsOf: URL(fileURLWithPath: caFile))
        } catch {
            throw .valueError(field: "EdgeModuleCACertificateFile", reason: "cannot be read (\(caFile))")
        }
        configuration.gatewayHostName = gateway
        configuration.serverVerificationCertificate = String(decoding: certificate, as: UTF8.self)
        return try IoTHubDeviceClient(
            hostName: connectionString.hostName, deviceId: deviceId, moduleId: moduleId, credential: .symmetricKey(key),
            configuration: configuration, logger: logger)
    }

    /// `IoTHubModuleClient.invoke_method`: calls direct method `methodName` on a device, or on a
    /// module of it, through the Edge hub (the gateway; the hub when none is configured), over
    /// HTTPS with this module's SAS token and `x-ms-edge-moduleId`. Needs no MQTT connection.
    ///
    /// - Parameters:
    ///   - payload: the method's JSON payload.
    ///   - responseTimeout: how long the hub waits for the answer, in seconds (the hub's
    ///     default, 30, when nil).
    ///   - connectTimeout: how long the hub waits for the target to connect, in seconds (0,
    ///     the hub's default, when nil).
    /// - Returns: the target's status and payload.
    /// - Throws: ``IoTHubError/clientError(_:)`` for a device (not module) identity;
    ///   ``IoTHubError/serviceError(status:message:retryAfterSeconds:)`` when the hub answers an
    ///   error status (404 when the target is not online); ``IoTHubError/credentialError(_:)`` on 401.
    public func invokeMethod(
        deviceId targetDeviceId: String, moduleId targetModuleId: String? = nil, methodName: String,
        payload: JSONValue = .null, responseTimeout: Int? = nil, connectTimeout: Int? = nil
    ) async throws(IoTHubError) -> MethodInvocationResult {
        try checkNotShutDown()
        guard let moduleId else { throw .clientError("invoke_method is for module identities (IoT Edge modules)") }
        guard !targetDeviceId.isEmpty else { throw .valueError(field: "device_id", reason: "is empty") }
        if let targetModuleId, targetModuleId.isEmpty { throw .valueError(field: "module_id", reason: "is empty") }
        guard !methodName.isEmpty else { throw .valueError(field: "methodName", reason: "is empty") }
        for (field, value) in [
            ("responseTimeoutInSeconds", responseTimeout), ("connectTimeoutInSeconds", connectTimeout),
        ] {
            if let value, value < 0 { throw .valueError(field: field, reason: "must not be negative") }
        }
        var body: [String: JSONValue] = ["methodName": .string(methodName), "payload": payload]
        if let responseTimeout { body["responseTimeoutInSeconds"] = .integer(Int64(responseTimeout)) }
        if let connectTimeout { body["connectTimeoutInSeconds"] = .integer(Int64(connectTimeout)) }
        var headers = [
            "Content-Type": "application/json", "Accept": "application/json",
            "x-ms-edge-moduleId": "\(deviceId)/\(moduleId)",
            "User-Agent": PercentEncoding.encode(UserAgent.string + configuration.productInfo),
        ]
        if let token = try await credentials.requestToken() { headers["Authorization"] = token.string }
        var path = "twins/\(PercentEncoding.encode(targetDeviceId))"
        if let targetModuleId { path += "/modules/\(PercentEncoding.encode(targetModuleId))" }
        let authority = hostAndPort(configuration.gatewayHostName ?? hostName, configuration.httpsPort)
        let url = "https://\(authority)/\(path)/methods?api-version=\(MQTTIdentity.apiVersion)"
        // The hub holds the request while it waits for the target: the transfer's bound is the
        // hub's (connect and response timeouts) plus a margin for the round trip.
        let client = HTTPSClient(
            policy: fileUpload.tlsPolicy, trustStore: fileUpload.trustStore, proxy: configuration.proxyOptions,
            timeoutSeconds: (responseTimeout ?? 30) + (connectTimeout ?? 0) + 30)
        let response = try await client.send(
            method: "POST", url: url, headers: headers, body: JSONValue.object(body).encoded())
        let text = String(decoding: response.body.prefix(512), as: UTF8.self)
        switch response.status {
        case 200:
            guard let answer = try? JSONValue(parsing: response.body), let status = answer["status"]?.intValue else {
                throw .clientError("the hub's answer to invoke_method is not {status, payload}")
            }
            return MethodInvocationResult(status: status, payload: answer["payload"] ?? .null)
        case 401: throw .credentialError("the hub refused the module's credentials: \(text)")
        default:
            throw .serviceError(status: response.status, message: text, retryAfterSeconds: response.retryAfterSeconds)
        }
    }
}

/// What a direct method invoked with ``IoTHubDeviceClient/invokeMethod(deviceId:moduleId:methodName:payload:responseTimeout:connectTimeout:)``
/// answered: the Python SDK's `{"status": …, "payload": …}`.
public struct MethodInvocationResult: Sendable, Hashable {
    /// The status the target answered with.
    public var status: Int
    /// The target's JSON payload (`null` when it sent none).
    public var payload: JSONValue

    public init(status: Int, payload: JSONValue) {
        self.status = status
        self.payload = payload
    }
}
