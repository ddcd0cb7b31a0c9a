import Foundation
import IoTHubProtocol
import NIOHTTP1

/// The IoT Edge device LocalHub plays the Edge runtime for: its modules get their SAS tokens
/// signed by the workload API on `socketPath` and connect to the hub as to their Edge hub.
struct EdgeDevice: Sendable, Equatable {
    var deviceId: String
    /// The unix socket the workload API listens on.
    var socketPath: String

    /// The workload API version LocalHub gives modules (`IOTEDGE_APIVERSION`).
    static let apiVersion = "2019-01-30"

    /// The `IOTEDGE_*` variables the Edge runtime gives module `moduleId` of this device.
    func environment(moduleId: String, generationId: String, hostName: String) -> [String: String] {
        [
            "IOTEDGE_IOTHUBHOSTNAME": hostName, "IOTEDGE_DEVICEID": deviceId, "IOTEDGE_MODULEID": moduleId,
            "IOTEDGE_GATEWAYHOSTNAME": hostName, "IOTEDGE_MODULEGENERATIONID": generationId,
            "IOTEDGE_WORKLOADURI": "unix://\(socketPath)", "IOTEDGE_APIVERSION": Self.apiVersion,
            "IOTEDGE_AUTHSCHEME": "sasToken",
        ]
    }
}

/// The part of the IoT Edge security daemon's workload API a module client uses: the trust
/// bundle (the CA of the hub's server certificate) and HMAC signing with a module's key, for
/// one Edge device. Plain HTTP on a unix socket, as the Edge runtime serves it.
struct EdgeWorkloadRoutes: Sendable {
    let hub: Hub
    let edge: EdgeDevice
    let caCertificatePEM: String

    func register(on router: inout Router) {
        router.add(.GET, "trust-bundle") { request, _ throws(ServiceError) in
            try Self.checkAPIVersion(request)
            return .json(["certificate": .string(caCertificatePEM)])
        }
        router.add(.POST, "modules/:mid/genid/:genid/sign") { request, parameters throws(ServiceError) in
            try Self.checkAPIVersion(request)
            let key = IdentityKey(deviceId: edge.deviceId, moduleId: parameters["mid"])
            guard let record = hub.identity(key) else { throw .notFound(key) }
            guard record.generationId == parameters["genid"] else {
                throw .resourceNotFound("\(key) has another generation id: the module was created again")
            }
            guard let body = try request.json().objectValue else { throw .badRequest("the body must be a JSON object") }
            guard case .string("HMACSHA256")? = body["algo"] else { throw .badRequest("algo must be HMACSHA256") }
            let signingKey: String?
            switch body["keyId"] {
            case .string("primary")?: signingKey = record.authentication.primaryKey
            case .string("secondary")?: signingKey = record.authentication.secondaryKey
            default: throw .badRequest("keyId must be primary or secondary")
            }
            guard let signingKey else { throw .badRequest("\(key) does not authenticate with a shared access key") }
            guard case .string(let encoded)? = body["data"], let data = Data(base64Encoded: encoded),
                let text = String(data: data, encoding: .utf8)
            else {
                throw .badRequest("data must be base64 of UTF-8 text")
            }
            do throws(IoTHubError) {
                return .json(["digest": .string(try SASToken.sign(text, key: signingKey))])
            } catch {
                throw .internalError("cannot sign with the key of \(key)")
            }
        }
    }

    private static func checkAPIVersion(_ request: RouterRequest) throws(ServiceError) {
        guard let version = request.query["api-version"], !version.isEmpty else {
            throw .badRequest("the api-version query parameter is required")
        }
    }
}
