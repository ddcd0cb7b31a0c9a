import NIOHTTP1

/// An error of the hub's HTTP APIs, with IoT Hub's status and error code.
enum ServiceError: Error, Sendable, Equatable {
    case notFound(IdentityKey)
    case resourceNotFound(String)
    case conflict(String)
    case moduleConflict(String)
    case blobAuthenticationFailed(String)
    case preconditionFailed(String)
    case badRequest(String)
    case unauthorized(String)
    case deviceNotOnline(IdentityKey)
    case gatewayTimeout(String)
    case queueFull(String)
    case throttled
    case payloadTooLarge(String)
    case internalError(String)

    var status: HTTPResponseStatus {
        switch self {
        case .notFound, .resourceNotFound, .deviceNotOnline: .notFound
        case .conflict, .moduleConflict: .conflict
        case .blobAuthenticationFailed: .forbidden
        case .preconditionFailed: .preconditionFailed
        case .badRequest: .badRequest
        case .unauthorized: .unauthorized
        case .gatewayTimeout: .gatewayTimeout
        case .queueFull: .forbidden
        case .throttled: .tooManyRequests
        case .payloadTooLarge: .payloadTooLarge
        case .internalError: .internalServerError
        }
    }

    /// IoT Hub's numeric error code and its name.
    var iotHubCode: (Int, String) {
        switch self {
        case .notFound(let key): key.moduleId == nil ? (404001, "DeviceNotFound") : (404010, "ModuleNotFound")
        case .resourceNotFound: (404000, "NotFound")
        case .conflict: (409001, "DeviceAlreadyExists")
        case .moduleConflict: (409301, "ModuleAlreadyExistsOnDevice")
        case .blobAuthenticationFailed: (403000, "AuthenticationFailed")
        case .preconditionFailed: (412002, "PreconditionFailed")
        case .badRequest: (400004, "ArgumentInvalid")
        case .unauthorized: (401002, "IotHubUnauthorizedAccess")
        case .deviceNotOnline: (404103, "DeviceNotOnline")
        case .gatewayTimeout: (504101, "GatewayTimeout")
        case .queueFull: (403004, "DeviceMaximumQueueDepthExceeded")
        case .throttled: (429001, "ThrottlingException")
        case .payloadTooLarge: (413001, "MessageTooLarge")
        case .internalError: (500001, "ServerError")
        }
    }

    var message: String {
        switch self {
        case .notFound(let key):
            key.moduleId == nil ? "Device \(key.deviceId) not registered" : "Module \(key) not registered"
        case .deviceNotOnline(let key): "Timed out waiting for \(key) to connect"
        case .throttled: "Throttled by the local hub's fault injection"
        case .resourceNotFound(let detail), .conflict(let detail), .preconditionFailed(let detail),
            .badRequest(let detail), .unauthorized(let detail), .moduleConflict(let detail),
            .blobAuthenticationFailed(let detail), .gatewayTimeout(let detail),
            .queueFull(let detail), .payloadTooLarge(let detail), .internalError(let detail):
            detail
        }
    }
}
