import FoundationEssentials
import HTTPTypes
import Hummingbird
import IoTHubProtocol
import NIOCore

/// The connection (`/status`, `/connect`, `/disconnect`, `/sastoken`), the event stream
/// (`/events`) and what operators and orchestrators read (`/healthz`, `/readyz`, `/metrics`,
/// `/openapi.yaml`).
struct OperationsRoutes: RouteArea {
    let bridge: DeviceBridge
    let openAPIDocument: Data

    func addRoutes(to router: some RouterMethods<Context>) {
        router.get("status", use: status)
        router.post("connect", use: connect)
        router.post("disconnect", use: disconnect)
        router.put("sastoken", use: updateSASToken)
        router.post("provisioning", use: reprovision)
        router.get("events", use: events)
        router.get("healthz", use: health)
        router.get("readyz", use: readiness)
        router.get("metrics", use: metrics)
        router.get("openapi.yaml", use: openAPI)
    }

    // MARK: Connection

    @Sendable func status(_ request: Request, context: Context) async throws -> Response {
        let status = bridge.status()
        var identity: [String: JSONValue] = [
            "hostName": .string(status.hostName), "deviceId": .string(status.deviceId),
            "authentication": .string(status.authentication.rawValue),
        ]
        if let moduleId = status.moduleId { identity["moduleId"] = .string(moduleId) }
        if let gateway = status.gatewayHostName { identity["gatewayHostName"] = .string(gateway) }
        var members: [String: JSONValue] = [
            "identity": .object(identity), "state": .string(status.state.rawValue),
            "since": .string(Timestamp.string(status.since)),
            "newSasTokenRequired": .bool(status.isNewSASTokenRequired), "transport": .string(status.transport),
        ]
        if let proxy = status.proxy { members["proxy"] = .string(proxy) }
        if let modelId = status.modelId { members["modelId"] = .string(modelId) }
        if let error = status.lastError { members["lastError"] = SidecarEvent.lastError(error) }
        if let expiry = status.tokenExpiry { members["tokenExpiry"] = .string(Timestamp.string(expiry)) }
        if let provisioning = bridge.provisioning?.report {
            if provisioning.result == nil, let error = provisioning.lastError { throw Self.provisioningProblem(error) }
            members["provisioning"] = provisioning.json
        }
        return .json(.object(members))
    }

    /// Registers with DPS again and answers the new assignment.
    @Sendable func reprovision(_ request: Request, context: Context) async throws -> Response {
        guard let report = try await bridge.reprovision() else {
            throw ProblemDetails.notForThisIdentity(
                "this sidecar's identity does not come from the Device Provisioning Service (see --dps-id-scope)")
        }
        return .json(report.json)
    }

    /// A device without a usable assignment from DPS: the registration's error, said to be one.
    static func provisioningProblem(_ error: IoTHubError) -> ProblemDetails {
        var problem = ProblemDetails(error, retryAfterSeconds: 10)
        problem.detail =
            "the registration with the Device Provisioning Service gave no usable assignment: \(problem.detail)"
        // Not ready: a 4xx or 500 would read as the request's fault or a sidecar bug.
        if problem.status < 502 { problem.status = 503 }
        return problem
    }

    @Sendable func connect(_ request: Request, context: Context) async throws -> Response {
        try await bridge.connect()
        return .noContent()
    }

    @Sendable func disconnect(_ request: Request, context: Context) async throws -> Response {
        await bridge.disconnect()
        return .noContent()
    }

    @Sendable func updateSASToken(_ request: Request, context: Context) async throws -> Response {
        if let type = request.mediaType, type != "text/plain" {
            throw ProblemDetails.invalid("send the token as text/plain, not \(type)", status: 415)
        }
        let body = try await request.collectedBody()
        let text = String(decoding: body, as: UTF8.self).trimmingWhitespaceAndNewlines()
        do {
            try await bridge.updateSASToken(text)
        } catch .notASASTokenIdentity(let authentication) {
            throw ProblemDetails.notForThisIdentity(
                "this sidecar's identity uses a \(authentication == .x509 ? "certificate" : "key"), not a SAS token given to it"
            )
        } catch .refused(let error) {
            throw error
        }
        return .noContent()
    }

    // MARK: Events

    @Sendable func events(_ request: Request, context: Context) async throws -> Response {
        let (current, later) = bridge.eventStream()
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                try await writer.write(ByteBuffer(string: current.wireFormat))
                try await withThrowingTaskGroup(of: Void.self) { group in
                    let (ticks, tick) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(64))
                    group.addTask {
                        for await event in later { tick.yield(event.wireFormat) }
                        tick.finish()
                    }
                    group.addTask {
                        while !Task.isCancelled {
                            try await Task.sleep(for: .seconds(15))
                            tick.yield(SidecarEvent.keepAlive)
                        }
                    }
                    for await text in ticks {
                        try await writer.write(ByteBuffer(string: text))
                    }
                    group.cancelAll()
                }
                try await writer.finish(nil)
            })
    }

    // MARK: Operations

    @Sendable func health(_ request: Request, context: Context) async throws -> Response {
        .json(["status": "ok"])
    }

    @Sendable func readiness(_ request: Request, context: Context) async throws -> Response {
        let status = bridge.status()
        if let provisioning = bridge.provisioning?.report, status.state != .connected,
            let error = provisioning.lastError
        {
            throw Self.provisioningProblem(error)
        }
        guard status.state == .connected else {
            var detail = "the client is \(status.state.rawValue)"
            if let error = status.lastError { detail += " (last error: \(error))" }
            throw ProblemDetails(status: 503, code: "NoConnectionError", detail: detail)
        }
        return .json(["status": "ready", "state": "connected"])
    }

    @Sendable func metrics(_ request: Request, context: Context) async throws -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody(byteBuffer: ByteBuffer(string: await bridge.metricsExposition())))
    }

    @Sendable func openAPI(_ request: Request, context: Context) async throws -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/yaml"
        return Response(
            status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: openAPIDocument)))
    }
}
