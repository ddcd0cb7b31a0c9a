import Foundation
import IoTHubProtocol
import NIOHTTP1

/// The Device Provisioning Service's service REST API (api-version 2021-10-01), the part
/// Microsoft's `azure-iot-deviceprovisioning` SDK uses: individual enrollments, enrollment
/// groups, device registration states and their queries; authorised by a SAS token of the
/// `provisioningserviceowner` policy. Plus `GET /local/provisioning` (the hub owner's), which
/// counts registrations.
///
/// Queries do not evaluate the query text: every query returns every item, a page at a time
/// (`x-ms-max-item-count`, `x-ms-continuation`).
struct ProvisioningRoutes: Sendable {
    let hub: Hub

    private var service: ProvisioningService { hub.provisioning }

    func register(on router: inout Router) {
        let service = self.service
        let hub = self.hub
        for (collection, isGroup) in [("enrollments", false), ("enrollmentGroups", true)] {
            router.add(.GET, collection + "/:id") { request, parameters in
                Self.answer { () throws(ProvisioningFailure) in
                    try service.authorizeProvisioningService(request.authorization)
                    let enrollment = try service.get(parameters["id"], isGroup: isGroup)
                    return .json(
                        ProvisioningJSON.enrollment(
                            enrollment, registration: isGroup ? nil : service.registration(enrollment.id)))
                }
            }
            router.add(.PUT, collection + "/:id") { request, parameters in
                Self.answer { () throws(ProvisioningFailure) in
                    try service.authorizeProvisioningService(request.authorization)
                    let id = parameters["id"]
                    try Self.validate(id, isGroup: isGroup)
                    let parsed = try ProvisioningJSON.readEnrollment(
                        try Self.json(request), id: id, isGroup: isGroup, hubHostName: hub.hostName, now: Date())
                    let enrollment = try service.put(parsed, ifMatch: request.ifMatch)
                    hub.stateChanged()
                    return .json(
                        ProvisioningJSON.enrollment(
                            enrollment, registration: isGroup ? nil : service.registration(enrollment.id)))
                }
            }
            router.add(.DELETE, collection + "/:id") { request, parameters in
                Self.answer { () throws(ProvisioningFailure) in
                    try service.authorizeProvisioningService(request.authorization)
                    try service.delete(parameters["id"], isGroup: isGroup, ifMatch: request.ifMatch)
                    hub.stateChanged()
                    return .empty()
                }
            }
            router.add(.POST, collection + "/:id/attestationmechanism") { request, parameters in
                Self.answer { () throws(ProvisioningFailure) in
                    try service.authorizeProvisioningService(request.authorization)
                    let enrollment = try service.get(parameters["id"], isGroup: isGroup)
                    return .json(ProvisioningJSON.attestation(enrollment.attestation, isGroup: isGroup))
                }
            }
            router.add(.POST, collection + "/query") { request, _ in
                Self.answer { () throws(ProvisioningFailure) in
                    try service.authorizeProvisioningService(request.authorization)
                    try Self.readQuery(request)
                    let items = service.all(groups: isGroup).map { enrollment in
                        ProvisioningJSON.enrollment(
                            enrollment, registration: isGroup ? nil : service.registration(enrollment.id))
                    }
                    return try Self.page(items, itemType: isGroup ? "EnrollmentGroup" : "Enrollment", request: request)
                }
            }
        }
        router.add(.GET, "registrations/:id") { request, parameters in
            Self.answer { () throws(ProvisioningFailure) in
                try service.authorizeProvisioningService(request.authorization)
                guard let record = service.registration(parameters["id"]) else {
                    throw .notFound("no registration '\(parameters["id"].prefix(128))'")
                }
                return .json(ProvisioningJSON.registrationState(record))
            }
        }
        router.add(.DELETE, "registrations/:id") { request, parameters in
            Self.answer { () throws(ProvisioningFailure) in
                try service.authorizeProvisioningService(request.authorization)
                try service.deleteRegistration(parameters["id"], ifMatch: request.ifMatch)
                hub.stateChanged()
                return .empty()
            }
        }
        router.add(.POST, "registrations/:id/query") { request, parameters in
            Self.answer { () throws(ProvisioningFailure) in
                try service.authorizeProvisioningService(request.authorization)
                _ = try service.get(parameters["id"], isGroup: true)
                let items = service.registrations(ofGroup: parameters["id"]).map(ProvisioningJSON.registrationState)
                return try Self.page(items, itemType: "DeviceRegistration", request: request)
            }
        }
        router.add(.GET, "local/provisioning") { request, _ throws(ServiceError) in
            try hub.authorizeService(request.authorization)
            let registrations = service.registrations()
            return .json([
                "idScope": .string(service.idScope),
                "provisioningHost": .string(hub.hostName),
                "enrollments": .integer(Int64(service.all(groups: false).count)),
                "enrollmentGroups": .integer(Int64(service.all(groups: true).count)),
                "registrationCount": .integer(Int64(registrations.reduce(0) { $0 + $1.registrationCount })),
                "registrations": .array(
                    registrations.map { record in
                        var members: [String: JSONValue] = [
                            "registrationId": .string(record.registrationId),
                            "count": .integer(Int64(record.registrationCount)),
                            "status": .string(record.status),
                            "lastUpdatedDateTimeUtc": ProvisioningJSON.timestamp(record.lastUpdated),
                        ]
                        if let deviceId = record.deviceId { members["deviceId"] = .string(deviceId) }
                        if let substatus = record.substatus { members["substatus"] = .string(substatus) }
                        if let group = record.enrollmentGroupId { members["enrollmentGroupId"] = .string(group) }
                        return .object(members)
                    }),
            ])
        }
    }

    /// Runs a handler of the service API, answering a failure in DPS's error shape.
    private static func answer(_ body: () throws(ProvisioningFailure) -> RouterResponse) -> RouterResponse {
        do {
            return try body()
        } catch {
            return Self.error(error)
        }
    }

    static func error(_ failure: ProvisioningFailure) -> RouterResponse {
        .json(failure.json(), status: HTTPResponseStatus(statusCode: failure.status))
    }

    private static func validate(_ id: String, isGroup: Bool) throws(ProvisioningFailure) {
        guard ProvisioningProtocol.isValidRegistrationId(id) else {
            throw .badRequest(
                isGroup
                    ? "the enrollment group id '\(id.prefix(64))' is invalid: use 1 to 128 lower-case letters, digits or -._:, beginning and ending with a letter or digit"
                    : ProvisioningProtocol.registrationIdProblem(id))
        }
    }

    private static func json(_ request: RouterRequest) throws(ProvisioningFailure) -> JSONValue {
        guard request.body.readableBytes > 0 else { throw .badRequest("the request has no body") }
        guard request.body.readableBytes <= 1 << 20 else { throw .payloadTooLarge("the request body exceeds 1 MiB") }
        guard let json = try? JSONValue(parsing: request.bodyData) else {
            throw .badRequest("the body is not valid JSON")
        }
        return json
    }

    /// Checks a query specification (`{"query": "…"}`); an empty body is allowed.
    private static func readQuery(_ request: RouterRequest) throws(ProvisioningFailure) {
        guard request.body.readableBytes > 0 else { return }
        guard case .string? = try json(request)["query"] else {
            throw .badRequest("the query specification needs a query string")
        }
    }

    /// One page of a query's items: `x-ms-max-item-count` items (all by default) after the
    /// offset in `x-ms-continuation`; the header comes back while more remain.
    private static func page(_ items: [JSONValue], itemType: String, request: RouterRequest) throws(ProvisioningFailure)
        -> RouterResponse
    {
        var size = items.count
        if let text = request.headers.first(name: "x-ms-max-item-count") {
            guard let value = Int(text), value > 0 else {
                throw .badRequest("x-ms-max-item-count must be a positive integer")
            }
            size = value
        }
        var offset = 0
        if let text = request.headers.first(name: "x-ms-continuation") {
            guard let value = Int(text), value >= 0 else {
                throw .badRequest("x-ms-continuation is not a continuation token of this service")
            }
            offset = value
        }
        let end = min(items.count, offset + size)
        let slice = offset < end ? Array(items[offset..<end]) : []
        var headers: HTTPHeaders = ["x-ms-item-type": itemType, "x-ms-max-item-count": String(size)]
        if end < items.count { headers.add(name: "x-ms-continuation", value: String(end)) }
        return .json(.array(slice), headers: headers)
    }
}
