extension Router {
    /// The HTTPS listener's routes: IoT Hub's service API, the device file-upload API, the
    /// emulator's own `/local` API and the provisioning service's API.
    static func https(for hub: Hub) -> Router {
        var router = Router()
        ServiceRoutes(hub: hub).register(on: &router)
        FileUploadRoutes(hub: hub).register(on: &router)
        LocalRoutes(hub: hub).register(on: &router)
        ProvisioningRoutes(hub: hub).register(on: &router)
        return router
    }

    /// The IoT Edge workload API's routes (its unix socket).
    static func edgeWorkload(for hub: Hub, edge: EdgeDevice, caCertificatePEM: String) -> Router {
        var router = Router()
        EdgeWorkloadRoutes(hub: hub, edge: edge, caCertificatePEM: caCertificatePEM).register(on: &router)
        return router
    }

    /// The blob listener's routes (the storage behind file uploads).
    static func blob(for hub: Hub) -> Router {
        var router = Router()
        BlobRoutes(blobs: hub.blobs).register(on: &router)
        return router
    }
}

extension Router.Parameters {
    /// The identity a path names: `:id`, and `:mid` for a module's path.
    func identityKey(isModule: Bool) -> IdentityKey {
        IdentityKey(deviceId: self["id"], moduleId: isModule ? self["mid"] : nil)
    }
}

extension RouterRequest {
    /// The `Authorization` header: a SAS token, for the hub to check.
    var authorization: String? { headers.first(name: "Authorization") }

    /// The `If-Match` header, for the hub's etag rules.
    var ifMatch: String? { headers.first(name: "If-Match") }
}
