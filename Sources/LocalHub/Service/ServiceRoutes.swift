import Foundation
import IoTHubProtocol
import NIOHTTP1

/// IoT Hub's service REST API (api-version 2021-04-12), the subset Microsoft's service SDKs
/// use: identities, twins, direct methods and purging the cloud-to-device queue. Reads the
/// requests, calls the hub, and answers in IoT Hub's JSON.
struct ServiceRoutes: Sendable {
    let hub: Hub

    func register(on router: inout Router) {
        router.add(.GET, "devices") { request, _ throws(ServiceError) in
            try hub.authorizeService(request.authorization)
            let top = try request.integer("top", default: 1000, range: 1...1000)
            let records = hub.identities().prefix(top)
            return .json(.array(records.map { RegistryJSON.identity($0, connected: hub.isConnected($0.key)) }))
        }
        for (prefix, isModule) in [("devices/:id", false), ("devices/:id/modules/:mid", true)] {
            router.add(.GET, prefix) { request, parameters throws(ServiceError) in
                try hub.authorizeService(request.authorization)
                let key = parameters.identityKey(isModule: isModule)
                guard let record = hub.identity(key) else { throw .notFound(key) }
                return .json(RegistryJSON.identity(record, connected: hub.isConnected(key)))
            }
            router.add(.PUT, prefix) { request, parameters throws(ServiceError) in
                try hub.authorizeService(request.authorization)
                let key = parameters.identityKey(isModule: isModule)
                let record = try hub.putIdentity(key, body: try request.json(), ifMatch: request.ifMatch)
                return .json(RegistryJSON.identity(record, connected: hub.isConnected(key)))
            }
            router.add(.DELETE, prefix) { request, parameters throws(ServiceError) in
                try hub.authorizeService(request.authorization)
                try hub.deleteIdentity(parameters.identityKey(isModule: isModule), ifMatch: request.ifMatch)
                return .empty()
            }
        }
        router.add(.GET, "devices/:id/modules") { request, parameters throws(ServiceError) in
            try hub.authorizeService(request.authorization)
            let device = IdentityKey(deviceId: parameters["id"])
            guard hub.identity(device) != nil else { throw .notFound(device) }
            return .json(
                .array(
                    hub.identities(modulesOf: device.deviceId).map {
                        RegistryJSON.identity($0, connected: hub.isConnected($0.key))
                    }))
        }
        router.add(.DELETE, "devices/:id/commands") { request, parameters throws(ServiceError) in
            try hub.authorizeService(request.authorization)
            let purged = try hub.purgeCloudToDevice(of: parameters["id"])
            return .json([
                "totalMessagesPurged": .integer(Int64(purged)), "deviceId": .string(parameters["id"]),
                "moduleId": .null,
            ])
        }
        for (prefix, isModule) in [("twins/:id", false), ("twins/:id/modules/:mid", true)] {
            router.add(.GET, prefix) { request, parameters throws(ServiceError) in
                try hub.authorizeService(request.authorization)
                let key = parameters.identityKey(isModule: isModule)
                guard let record = hub.identity(key) else { throw .notFound(key) }
                return .json(RegistryJSON.twin(record, connected: hub.isConnected(key)))
            }
            for (method, replace) in [(HTTPMethod.PATCH, false), (.PUT, true)] {
                router.add(method, prefix) { request, parameters throws(ServiceError) in
                    try hub.authorizeService(request.authorization)
                    return try updateTwin(request, of: parameters.identityKey(isModule: isModule), replace: replace)
                }
            }
            router.add(.POST, prefix + "/methods") { request, parameters throws(ServiceError) in
                try hub.authorizeMethodInvocation(request)
                return try await invokeMethod(request, on: parameters.identityKey(isModule: isModule))
            }
        }
    }

    /// `PATCH` (update) or `PUT` (replace) of a twin: desired properties and tags.
    private func updateTwin(_ request: RouterRequest, of key: IdentityKey, replace: Bool) throws(ServiceError)
        -> RouterResponse
    {
        guard let body = try request.json().objectValue else { throw .badRequest("the twin must be a JSON object") }
        let desired = body["properties"]?["desired"]
        if let desired, desired.objectValue == nil { throw .badRequest("properties.desired must be an object") }
        if body["properties"]?["reported"] != nil {
            throw .badRequest("reported properties are set by the device, not the service")
        }
        let record = try hub.patchDesired(
            key, patch: desired?.objectValue ?? [:], tags: body["tags"]?.objectValue,
            replace: replace && desired != nil,
            ifMatch: request.ifMatch)
        return .json(RegistryJSON.twin(record, connected: hub.isConnected(key)))
    }

    /// `POST …/methods`: waits for the device to connect if asked to, then for its answer.
    private func invokeMethod(_ request: RouterRequest, on key: IdentityKey) async throws(ServiceError)
        -> RouterResponse
    {
        guard let body = try request.json().objectValue else { throw .badRequest("the body must be a JSON object") }
        guard let name = body["methodName"].flatMap(RegistryJSON.stringValue), !name.isEmpty else {
            throw .badRequest("methodName is required")
        }
        let responseTimeout = body["responseTimeoutInSeconds"]?.intValue ?? 30
        guard (5...300).contains(responseTimeout) else {
            throw .badRequest("responseTimeoutInSeconds must be from 5 to 300")
        }
        let connectTimeout = body["connectTimeoutInSeconds"]?.intValue ?? 0
        guard (0...300).contains(connectTimeout) else {
            throw .badRequest("connectTimeoutInSeconds must be from 0 to 300")
        }
        let payload = (body["payload"] ?? .null).encoded()
        guard hub.identity(key) != nil else { throw .notFound(key) }
        if connectTimeout > 0 {
            // Like IoT Hub, wait for the device to come online first.
            await hub.waitUntilConnected(key, timeout: .seconds(connectTimeout))
        }
        let result = try await hub.invokeMethod(
            on: key, name: name, payload: payload, responseTimeout: .seconds(responseTimeout))
        let responsePayload =
            (try? JSONValue(parsing: result.payload)) ?? .string(String(decoding: result.payload, as: UTF8.self))
        return .json([
            "status": .integer(Int64(result.status)), "payload": result.payload.isEmpty ? .null : responsePayload,
        ])
    }
}
