import HTTPTypes
import Hummingbird
import IoTHubProtocol

/// `/invoke`: a module calls a direct method on a device or on another module through its
/// IoT Edge hub (the Python SDK's `IoTHubModuleClient.invoke_method`).
struct InvokeRoutes: RouteArea {
    let bridge: DeviceBridge

    func addRoutes(to router: some RouterMethods<Context>) {
        router.group("invoke")
            .post(":deviceId", use: invoke)
            .post(":deviceId/:moduleId", use: invoke)
    }

    /// `{methodName, payload, responseTimeoutInSeconds, connectTimeoutInSeconds}` → the
    /// target's `{status, payload}`.
    @Sendable func invoke(_ request: Request, context: Context) async throws -> Response {
        let deviceId = try context.pathParameter("deviceId")
        let moduleId = try context.parameters.get("moduleId") == nil ? nil : context.pathParameter("moduleId")
        guard bridge.client.moduleId != nil else {
            throw ProblemDetails.notForThisIdentity(
                "invoke_method is for module identities (an IoT Edge module, --edge-environment); this sidecar is a device"
            )
        }
        try request.requireJSON()
        let members = try await request.jsonBody().objectMembers(
            or:
                "the body must be a JSON object {methodName, payload, responseTimeoutInSeconds, connectTimeoutInSeconds}"
        )
        guard case .string(let methodName)? = members["methodName"], !methodName.isEmpty else {
            throw ProblemDetails.invalid("methodName must be a non-empty string", field: "methodName")
        }
        var timeouts: [String: Int] = [:]
        for name in ["responseTimeoutInSeconds", "connectTimeoutInSeconds"] where members[name] != nil {
            let seconds = try members.int32(name)
            guard (0...300).contains(seconds) else {
                throw ProblemDetails.invalid("\(name) must be an integer from 0 to 300", field: name)
            }
            timeouts[name] = Int(seconds)
        }
        let result = try await bridge.client.invokeMethod(
            deviceId: deviceId, moduleId: moduleId, methodName: methodName, payload: members["payload"] ?? .null,
            responseTimeout: timeouts["responseTimeoutInSeconds"], connectTimeout: timeouts["connectTimeoutInSeconds"])
        return .json(["status": .integer(Int64(result.status)), "payload": result.payload])
    }
}
