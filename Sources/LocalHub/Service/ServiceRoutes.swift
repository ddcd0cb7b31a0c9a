import Foundation
import IoTHubProtocol
import NIOCore
import NIOHTTP1

extension Hub {
    /// The routes of the HTTPS listener: IoT Hub's service API, the device file-upload API and
    /// the emulator's own `/local` API.
    func httpsRouter(eventLoopGroup: any EventLoopGroup) -> Router {
        var router = Router()
        addServiceRoutes(to: &router, eventLoopGroup: eventLoopGroup)
        addFileUploadRoutes(to: &router)
        addLocalRoutes(to: &router)
        return router
    }

    // MARK: Service API (api-version 2021-04-12)

    private func addServiceRoutes(to router: inout Router, eventLoopGroup: any EventLoopGroup) {
        router.add(.GET, "devices") { [self] request, _ throws(ServiceError) in
            try authorizeService(request)
            let top = try request.integer("top", default: 1000, range: 1...1000)
            let records = identities().prefix(top)
            return .json(.array(records.map { RegistryJSON.identity($0, connected: isConnected($0.key)) }))
        }
        for (prefix, isModule) in [("devices/:id", false), ("devices/:id/modules/:mid", true)] {
            router.add(.GET, prefix) { [self] request, parameters throws(ServiceError) in
                try authorizeService(request)
                let key = Self.key(parameters, isModule: isModule)
                guard let record = identity(key) else { throw .notFound(key) }
                return .json(RegistryJSON.identity(record, connected: isConnected(key)))
            }
            router.add(.PUT, prefix) { [self] request, parameters throws(ServiceError) in
                try authorizeService(request)
                let key = Self.key(parameters, isModule: isModule)
                let record = try putIdentity(key, body: try request.json(), ifMatch: request.headers.first(name: "If-Match"))
                return .json(RegistryJSON.identity(record, connected: isConnected(key)))
            }
            router.add(.DELETE, prefix) { [self] request, parameters throws(ServiceError) in
                try authorizeService(request)
                try deleteIdentity(Self.key(parameters, isModule: isModule), ifMatch: request.headers.first(name: "If-Match"))
                return .empty()
            }
        }
        router.add(.GET, "devices/:id/modules") { [self] request, parameters throws(ServiceError) in
            try authorizeService(request)
            guard identity(IdentityKey(deviceId: parameters["id"])) != nil else { throw .notFound(IdentityKey(deviceId: parameters["id"])) }
            return .json(.array(identities(modulesOf: parameters["id"]).map { RegistryJSON.identity($0, connected: isConnected($0.key)) }))
        }
        router.add(.DELETE, "devices/:id/commands") { [self] request, parameters throws(ServiceError) in
            try authorizeService(request)
            let purged = try purgeCloudToDevice(of: parameters["id"])
            return .json(["totalMessagesPurged": .integer(Int64(purged)), "deviceId": .string(parameters["id"]), "moduleId": .null])
        }
        for (prefix, isModule) in [("twins/:id", false), ("twins/:id/modules/:mid", true)] {
            router.add(.GET, prefix) { [self] request, parameters throws(ServiceError) in
                try authorizeService(request)
                let key = Self.key(parameters, isModule: isModule)
                guard let record = identity(key) else { throw .notFound(key) }
                return .json(RegistryJSON.twin(record, connected: isConnected(key)))
            }
            for (method, replace) in [(HTTPMethod.PATCH, false), (.PUT, true)] {
                router.add(method, prefix) { [self] request, parameters throws(ServiceError) in
                    try authorizeService(request)
                    let key = Self.key(parameters, isModule: isModule)
                    guard let body = try request.json().objectValue else { throw .badRequest("the twin must be a JSON object") }
                    let desired = body["properties"]?["desired"]
                    if let desired, desired.objectValue == nil { throw .badRequest("properties.desired must be an object") }
                    if body["properties"]?["reported"] != nil { throw .badRequest("reported properties are set by the device, not the service") }
                    let tags = body["tags"]?.objectValue
                    let record = try patchDesired(
                        key, patch: desired?.objectValue ?? [:], tags: tags, replace: replace && desired != nil,
                        ifMatch: request.headers.first(name: "If-Match"))
                    return .json(RegistryJSON.twin(record, connected: isConnected(key)))
                }
            }
            router.add(.POST, prefix + "/methods") { [self] request, parameters throws(ServiceError) in
                try authorizeService(request)
                let key = Self.key(parameters, isModule: isModule)
                return try await invokeMethodRoute(request, key: key, eventLoop: eventLoopGroup.next())
            }
        }
    }

    private func invokeMethodRoute(_ request: RouterRequest, key: IdentityKey, eventLoop: any EventLoop) async throws(ServiceError) -> RouterResponse {
        guard let body = try request.json().objectValue else { throw .badRequest("the body must be a JSON object") }
        guard let name = body["methodName"].flatMap(RegistryJSON.stringValue), !name.isEmpty else {
            throw .badRequest("methodName is required")
        }
        let responseTimeout = body["responseTimeoutInSeconds"]?.intValue ?? 30
        guard (5...300).contains(responseTimeout) else { throw .badRequest("responseTimeoutInSeconds must be from 5 to 300") }
        let connectTimeout = body["connectTimeoutInSeconds"]?.intValue ?? 0
        guard (0...300).contains(connectTimeout) else { throw .badRequest("connectTimeoutInSeconds must be from 0 to 300") }
        let payload = (body["payload"] ?? .null).encoded()
        guard identity(key) != nil else { throw .notFound(key) }
        if connectTimeout > 0 {
            // Like IoT Hub, wait for the device to come online first.
            let deadline = ContinuousClock.now + .seconds(connectTimeout)
            while !isConnected(key), ContinuousClock.now < deadline, !Task.isCancelled {
                let generation = changes.generation
                if isConnected(key) { break }
                await changes.wait(afterGeneration: generation, timeout: deadline - ContinuousClock.now)
            }
        }
        let result = try await invokeMethod(on: key, name: name, payload: payload, responseTimeout: .seconds(Int64(responseTimeout)), eventLoop: eventLoop)
        let responsePayload = (try? JSONValue(parsing: result.payload)) ?? .string(String(decoding: result.payload, as: UTF8.self))
        return .json(["status": .integer(Int64(result.status)), "payload": result.payload.isEmpty ? .null : responsePayload])
    }

    static func key(_ parameters: Router.Parameters, isModule: Bool) -> IdentityKey {
        IdentityKey(deviceId: parameters["id"], moduleId: isModule ? parameters["mid"] : nil)
    }

    // MARK: Device file upload

    private func addFileUploadRoutes(to router: inout Router) {
        router.add(.POST, "devices/:id/files") { [self] request, parameters throws(ServiceError) in
            let key = IdentityKey(deviceId: parameters["id"])
            try authorizeDevice(request, key: key)
            guard let blobName = try request.json()["blobName"].flatMap(RegistryJSON.stringValue) else {
                throw .badRequest("blobName is required")
            }
            let upload = try startFileUpload(for: key, blobName: blobName)
            return .json([
                "correlationId": .string(upload.correlationId), "hostName": .string(upload.hostName),
                "containerName": .string(upload.containerName), "blobName": .string(upload.blobName),
                "sasToken": .string(upload.sasToken),
            ])
        }
        router.add(.POST, "devices/:id/files/notifications") { [self] request, parameters throws(ServiceError) in
            let key = IdentityKey(deviceId: parameters["id"])
            try authorizeDevice(request, key: key)
            let body = try request.json()
            guard let correlationId = body["correlationId"].flatMap(RegistryJSON.stringValue) else {
                throw .badRequest("correlationId is required")
            }
            guard case .bool(let isSuccess)? = body["isSuccess"] else { throw .badRequest("isSuccess must be true or false") }
            try completeFileUpload(
                for: key, correlationId: correlationId, isSuccess: isSuccess,
                statusCode: body["statusCode"]?.intValue ?? (isSuccess ? 200 : 500),
                statusDescription: body["statusDescription"].flatMap(RegistryJSON.stringValue) ?? "")
            return .empty()
        }
    }
}
