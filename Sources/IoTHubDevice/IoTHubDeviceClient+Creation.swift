public import IoTHubProtocol
public import Logging

// MARK: Creation

extension IoTHubDeviceClient {
    /// `create_from_connection_string`: device or module strings with `SharedAccessKey`,
    /// `SharedAccessSignature`, or `x509=true` together with `x509`. A `GatewayHostName` in the
    /// string is used unless the configuration names one.
    public static func fromConnectionString(
        _ text: String, x509: X509Credential? = nil,
        configuration: DeviceClientConfiguration = DeviceClientConfiguration(),
        logger: Logger = Logger(label: "iothub-device")
    ) throws(IoTHubError) -> IoTHubDeviceClient {
        let connectionString = try ConnectionString(parsing: text)
        guard let deviceId = connectionString.deviceId else {
            throw .valueError(
                field: "DeviceId", reason: "is missing: a device client needs a device or module connection string")
        }
        var configuration = configuration
        if configuration.gatewayHostName == nil { configuration.gatewayHostName = connectionString.gatewayHostName }
        let credential: DeviceCredential
        switch connectionString.credential {
        case .sharedAccessKey(let key): credential = .symmetricKey(key)
        case .sharedAccessSignature(let token): credential = .sasToken(token)
        case .x509:
            guard let x509 else { throw .valueError(field: "x509", reason: "x509=true needs a certificate and key") }
            credential = .x509(x509)
        }
        if x509 != nil, case .x509 = connectionString.credential {
        } else if x509 != nil {
            throw .valueError(
                field: "x509", reason: "a certificate was given but the connection string does not say x509=true")
        }
        return try IoTHubDeviceClient(
            hostName: connectionString.hostName, deviceId: deviceId, moduleId: connectionString.moduleId,
            credential: credential,
            configuration: configuration, logger: logger)
    }

    /// `create_from_sastoken`: the token names the hub, device and module.
    public static func fromSASToken(
        _ text: String, configuration: DeviceClientConfiguration = DeviceClientConfiguration(),
        logger: Logger = Logger(label: "iothub-device")
    ) throws(IoTHubError) -> IoTHubDeviceClient {
        let token = try SASToken(parsing: text)
        let (hostName, deviceId, moduleId) = try CredentialStore.identity(of: token)
        return try IoTHubDeviceClient(
            hostName: hostName, deviceId: deviceId, moduleId: moduleId, credential: .sasToken(token),
            configuration: configuration, logger: logger)
    }

    /// `create_from_symmetric_key`.
    public static func fromSymmetricKey(
        _ key: String, hostName: String, deviceId: String, moduleId: String? = nil,
        configuration: DeviceClientConfiguration = DeviceClientConfiguration(),
        logger: Logger = Logger(label: "iothub-device")
    ) throws(IoTHubError) -> IoTHubDeviceClient {
        try IoTHubDeviceClient(
            hostName: hostName, deviceId: deviceId, moduleId: moduleId, credential: .symmetricKey(key),
            configuration: configuration, logger: logger)
    }

    /// `create_from_x509_certificate`.
    public static func fromX509Certificate(
        _ credential: X509Credential, hostName: String, deviceId: String, moduleId: String? = nil,
        configuration: DeviceClientConfiguration = DeviceClientConfiguration(),
        logger: Logger = Logger(label: "iothub-device")
    ) throws(IoTHubError) -> IoTHubDeviceClient {
        try IoTHubDeviceClient(
            hostName: hostName, deviceId: deviceId, moduleId: moduleId, credential: .x509(credential),
            configuration: configuration, logger: logger)
    }
}
