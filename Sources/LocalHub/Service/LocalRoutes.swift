import Foundation
import IoTHubProtocol
import NIOCore
import NIOFoundationCompat
import NIOHTTP1

/// The emulator's own API under `/local`: send cloud-to-device messages, read telemetry and
/// upload notifications, read blobs, drop connections, inject faults.
struct LocalRoutes: Sendable {
    /// Longest long-poll of the `/local` API.
    static let maximumPollSeconds = 60

    let hub: Hub

    func register(on router: inout Router) {
        router.add(.GET, "local/status") { request, _ throws(ServiceError) in
            try hub.authorizeService(request.authorization)
            let connections = hub.connections()
            return .json([
                "hostName": .string(hub.hostName),
                "connected": .array(connections.map { JSONValue.string($0.clientId) }),
                "connections": .array(
                    connections.map { connection in
                        var members: [String: JSONValue] = [
                            "clientId": .string(connection.clientId),
                            "transport": .string(connection.transport.rawValue),
                        ]
                        if let userAgent = connection.userAgent { members["userAgent"] = .string(userAgent) }
                        if let modelId = connection.modelId { members["modelId"] = .string(modelId) }
                        return .object(members)
                    }),
                "identities": .integer(Int64(hub.identityCount)),
                "lastTelemetrySequenceNumber": .integer(Int64(hub.telemetry.lastSequenceNumber)),
            ])
        }
        router.add(.GET, "local/edge-environment") { request, _ throws(ServiceError) in
            try hub.authorizeService(request.authorization)
            guard let edge = hub.edgeDevice.withLockedValue({ $0 }) else {
                throw .resourceNotFound(
                    "the hub serves no IoT Edge device: start it with --edge-device and --edge-workload-socket")
            }
            guard let moduleId = request.query["moduleId"], !moduleId.isEmpty else {
                throw .badRequest("the moduleId query parameter is required")
            }
            let key = IdentityKey(deviceId: edge.deviceId, moduleId: moduleId)
            guard let record = hub.identity(key) else { throw .notFound(key) }
            let environment = edge.environment(
                moduleId: moduleId, generationId: record.generationId, hostName: hub.hostName)
            return .json(.object(environment.mapValues { .string($0) }))
        }
        router.add(.POST, "local/devices/:id/messages") { request, parameters throws(ServiceError) in
            try hub.authorizeService(request.authorization)
            let message = try Self.message(from: request)
            let ttl = try request.integer("ttl", default: Int(Hub.cloudToDeviceDefaultTimeToLive), range: 1...172_800)
            let (messageId, _) = try hub.enqueueCloudToDevice(
                to: parameters["id"], message: message, timeToLive: TimeInterval(ttl))
            return .json(["messageId": .string(messageId)], status: .accepted)
        }
        router.add(.POST, "local/devices/:id/modules/:mid/inputs/:input/messages") {
            request, parameters throws(ServiceError) in
            try hub.authorizeService(request.authorization)
            let key = IdentityKey(deviceId: parameters["id"], moduleId: parameters["mid"])
            let messageId = try hub.sendToModuleInput(
                key, input: parameters["input"], message: try Self.message(from: request))
            return .json(["messageId": .string(messageId)], status: .accepted)
        }
        for (prefix, isModule) in [
            ("local/devices/:id/disconnect", false), ("local/devices/:id/modules/:mid/disconnect", true),
        ] {
            router.add(.POST, prefix) { request, parameters throws(ServiceError) in
                try hub.authorizeService(request.authorization)
                let key = parameters.identityKey(isModule: isModule)
                guard hub.identity(key) != nil else { throw .notFound(key) }
                guard hub.dropConnection(of: key) else { throw .deviceNotOnline(key) }
                return .empty()
            }
        }
        for (prefix, isModule) in [
            ("local/devices/:id/discard-traffic", false), ("local/devices/:id/modules/:mid/discard-traffic", true),
        ] {
            router.add(.POST, prefix) { request, parameters throws(ServiceError) in
                try hub.authorizeService(request.authorization)
                let key = parameters.identityKey(isModule: isModule)
                guard hub.identity(key) != nil else { throw .notFound(key) }
                guard hub.discardTraffic(of: key) else { throw .deviceNotOnline(key) }
                return .empty()
            }
        }
        router.add(.GET, "local/telemetry") { request, _ throws(ServiceError) in
            try hub.authorizeService(request.authorization)
            let after = try request.cursor()
            let limit = try request.integer("limit", default: 100, range: 1...10_000)
            let timeout = try request.integer("timeout", default: 0, range: 0...Self.maximumPollSeconds)
            let filter = try Self.telemetryFilter(request)
            let page = await hub.telemetry.poll(after: after, limit: limit, timeout: .seconds(timeout), where: filter)
            return .json([
                "messages": .array(
                    page.entries.map { Self.telemetryJSON($0.entry, sequenceNumber: $0.sequenceNumber) }),
                "next": .integer(Int64(page.next)), "dropped": .integer(Int64(page.dropped)),
            ])
        }
        router.add(.GET, "local/telemetry/stream") { request, _ throws(ServiceError) in
            try hub.authorizeService(request.authorization)
            // Where to start: `after`, else the SSE `Last-Event-ID` of a reconnecting client, else now.
            let resume = request.query["after"] ?? request.headers.first(name: "Last-Event-ID")
            guard resume == nil || UInt64(resume ?? "") != nil else {
                throw .badRequest("after must be a sequence number")
            }
            let start = resume.flatMap { UInt64($0) } ?? hub.telemetry.lastSequenceNumber
            let filter = try Self.telemetryFilter(request)
            let log = hub.telemetry
            let stream = AsyncStream<ByteBuffer> { continuation in
                let task = Task {
                    var cursor = start
                    continuation.yield(ByteBuffer(string: ": telemetry stream\n\n"))
                    while !Task.isCancelled {
                        let page = await log.poll(after: cursor, limit: 500, timeout: .seconds(15), where: filter)
                        if page.entries.isEmpty {
                            continuation.yield(ByteBuffer(string: ": keep-alive\n\n"))
                        }
                        for (sequenceNumber, record) in page.entries {
                            let json = String(
                                decoding: Self.telemetryJSON(record, sequenceNumber: sequenceNumber).encoded(),
                                as: UTF8.self)
                            continuation.yield(
                                ByteBuffer(string: "id: \(sequenceNumber)\nevent: telemetry\ndata: \(json)\n\n"))
                        }
                        cursor = page.next
                    }
                    continuation.finish()
                }
                continuation.onTermination = { _ in task.cancel() }
            }
            return RouterResponse(
                status: .ok, headers: ["Content-Type": "text/event-stream", "Cache-Control": "no-cache"],
                body: .stream(stream))
        }
        router.add(.GET, "local/routes") { request, _ throws(ServiceError) in
            try hub.authorizeService(request.authorization)
            return .json(Self.routesJSON(hub.routedEventSources))
        }
        router.add(.PUT, "local/routes") { request, _ throws(ServiceError) in
            try hub.authorizeService(request.authorization)
            guard case .array(let names)? = try request.json()["messageSources"] else {
                throw .badRequest("the body must be an object with a messageSources array")
            }
            var sources: Set<MessageSource> = []
            for name in names {
                guard let text = RegistryJSON.stringValue(name), let source = MessageSource(rawValue: text) else {
                    throw .badRequest(
                        "unknown message source \(String(decoding: name.encoded(), as: UTF8.self)): use \(Self.sourceNames)"
                    )
                }
                sources.insert(source)
            }
            hub.setRoutedEventSources(sources)
            return .json(Self.routesJSON(hub.routedEventSources))
        }
        router.add(.GET, "local/file-uploads") { request, _ throws(ServiceError) in
            try hub.authorizeService(request.authorization)
            let after = try request.cursor()
            let timeout = try request.integer("timeout", default: 0, range: 0...Self.maximumPollSeconds)
            let page = await hub.fileUploadNotifications.poll(after: after, limit: 1000, timeout: .seconds(timeout))
            return .json([
                "notifications": .array(
                    page.entries.map { sequenceNumber, note in
                        [
                            "sequenceNumber": .integer(Int64(sequenceNumber)), "deviceId": .string(note.deviceId),
                            "blobName": .string(note.blobName), "blobUri": .string(note.blobUri),
                            "correlationId": .string(note.correlationId), "isSuccess": .bool(note.isSuccess),
                            "statusCode": .integer(Int64(note.statusCode)),
                            "statusDescription": .string(note.statusDescription),
                            "enqueuedTime": RegistryJSON.timestamp(note.enqueuedTime),
                        ]
                    }),
                "next": .integer(Int64(page.next)), "dropped": .integer(Int64(page.dropped)),
            ])
        }
        router.add(.GET, "local/blobs") { request, _ throws(ServiceError) in
            try hub.authorizeService(request.authorization)
            return .json(.array(hub.blobs.list().map { ["name": .string($0.name), "size": .integer(Int64($0.size))] }))
        }
        router.add(.GET, "local/blobs/:container/*blob") { request, parameters throws(ServiceError) in
            try hub.authorizeService(request.authorization)
            guard let blob = hub.blobs.get(container: parameters["container"], blob: parameters["blob"]) else {
                throw .resourceNotFound("no blob \(parameters["container"])/\(parameters["blob"])")
            }
            return RouterResponse(
                status: .ok,
                headers: ["Content-Type": blob.contentType ?? "application/octet-stream", "ETag": blob.etag],
                body: .buffer(ByteBuffer(data: blob.data)))
        }
        router.add(.GET, "local/faults") { request, _ throws(ServiceError) in
            try hub.authorizeService(request.authorization)
            return .json(Self.faultsJSON(hub.faults))
        }
        router.add(.PUT, "local/faults") { request, _ throws(ServiceError) in
            try hub.authorizeService(request.authorization)
            guard let body = try request.json().objectValue else { throw .badRequest("the body must be a JSON object") }
            var faults = Faults()
            if let seconds = body["refuseConnectionsSeconds"]?.intValue, seconds > 0 {
                faults.refuseConnectionsUntil = Date().addingTimeInterval(TimeInterval(seconds))
            }
            faults.throttleNextOperations = max(0, body["throttleNextOperations"]?.intValue ?? 0)
            faults.acknowledgementDelayMilliseconds = min(
                max(0, body["acknowledgementDelayMilliseconds"]?.intValue ?? 0), 60_000)
            hub.setFaults(faults)
            return .json(Self.faultsJSON(faults))
        }
        router.add(.DELETE, "local/faults") { request, _ throws(ServiceError) in
            try hub.authorizeService(request.authorization)
            hub.setFaults(Faults())
            return .empty()
        }
    }

    static func faultsJSON(_ faults: Faults) -> JSONValue {
        let refuse = faults.refuseConnectionsUntil.map { max(0, Int($0.timeIntervalSinceNow.rounded(.up))) } ?? 0
        return [
            "refuseConnectionsSeconds": .integer(Int64(refuse)),
            "throttleNextOperations": .integer(Int64(faults.throttleNextOperations)),
            "acknowledgementDelayMilliseconds": .integer(Int64(faults.acknowledgementDelayMilliseconds)),
        ]
    }

    /// The routes as `GET /local/routes` shows them: every source the built-in endpoint
    /// receives, telemetry first.
    static func routesJSON(_ routed: Set<MessageSource>) -> JSONValue {
        [
            "messageSources": .array(
                MessageSource.allCases.filter { $0 == .telemetry || routed.contains($0) }.map { .string($0.rawValue) })
        ]
    }

    static let sourceNames = MessageSource.allCases.map(\.rawValue).joined(separator: ", ")

    /// The `deviceId`, `moduleId` and `messageSource` (comma-separated) filters of a telemetry read.
    static func telemetryFilter(_ request: RouterRequest) throws(ServiceError) -> @Sendable (TelemetryRecord) -> Bool {
        let deviceId = request.query["deviceId"]
        let moduleId = request.query["moduleId"]
        var sources: Set<MessageSource>?
        if let text = request.query["messageSource"] {
            var wanted: Set<MessageSource> = []
            for name in text.split(separator: ",", omittingEmptySubsequences: false) {
                guard let source = MessageSource(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                    throw .badRequest("messageSource '\(name)' is not one of \(sourceNames)")
                }
                wanted.insert(source)
            }
            sources = wanted
        }
        return { [sources] record in
            (deviceId == nil || record.deviceId == deviceId) && (moduleId == nil || record.moduleId == moduleId)
                && (sources?.contains(record.source) ?? true)
        }
    }

    /// A message from a request: the body is the payload, `iothub-*` headers are properties
    /// (the same header names as IoT Hub's HTTPS device API).
    static func message(from request: RouterRequest) throws(ServiceError) -> Message {
        var message = Message(payload: request.bodyData)
        let headers = request.headers
        message.messageId = headers.first(name: "iothub-messageid")
        message.correlationId = headers.first(name: "iothub-correlationid")
        message.userId = headers.first(name: "iothub-userid")
        // The request's Content-Type stands in for iothub-contenttype, except the form encoding
        // that curl -d and HTML forms send without being asked.
        let requestType = headers.first(name: "Content-Type").flatMap {
            $0.lowercased().hasPrefix("application/x-www-form-urlencoded") ? nil : $0
        }
        message.contentType = headers.first(name: "iothub-contenttype") ?? requestType
        message.contentEncoding = headers.first(name: "iothub-contentencoding")
        message.expiryTimeUTC = headers.first(name: "iothub-expiry")
        if let ack = headers.first(name: "iothub-ack") {
            guard ["none", "positive", "negative", "full"].contains(ack) else {
                throw .badRequest("iothub-ack must be none, positive, negative or full")
            }
            message.ack = ack
        }
        for (name, value) in headers where name.lowercased().hasPrefix("iothub-app-") {
            let key = String(name.dropFirst("iothub-app-".count))
            guard !key.isEmpty else { throw .badRequest("an iothub-app- header needs a property name") }
            message.properties[key] = value
        }
        if let json = headers.first(name: "localhub-properties") {
            try addProperties(json: json, to: &message)
        }
        // The properties travel in the MQTT topic, whose length field has 16 bits.
        guard message.cloudToDevicePropertyBag.encoded.utf8.count <= 60_000 else {
            throw .badRequest("the message's properties take more than 60,000 bytes once encoded")
        }
        guard message.size <= Message.maximumSize else {
            throw .payloadTooLarge(
                "the message is \(message.size) bytes; IoT Hub accepts at most \(Message.maximumSize)")
        }
        return message
    }

    /// Application properties from `localhub-properties`, a JSON object of strings: names and
    /// values a header cannot carry (spaces, non-ASCII, control characters, as `\\u` escapes).
    private static func addProperties(json: String, to message: inout Message) throws(ServiceError) {
        guard let members = (try? JSONValue(parsing: Data(json.utf8)))?.objectValue else {
            throw .badRequest("localhub-properties must be a JSON object whose values are strings")
        }
        for (key, value) in members {
            guard case .string(let text) = value else {
                throw .badRequest("localhub-properties must be a JSON object whose values are strings")
            }
            guard !key.isEmpty else { throw .badRequest("a property in localhub-properties needs a name") }
            guard message.properties[key] == nil else {
                throw .badRequest("the property \(key) is given twice")
            }
            message.properties[key] = text
        }
    }

    static func telemetryJSON(_ record: TelemetryRecord, sequenceNumber: UInt64) -> JSONValue {
        let message = record.message
        var members: [String: JSONValue] = [
            "sequenceNumber": .integer(Int64(sequenceNumber)),
            "enqueuedTime": RegistryJSON.timestamp(record.enqueuedTime),
            "deviceId": .string(record.deviceId),
            "properties": .object(message.properties.mapValues(JSONValue.string)),
            "rawProperties": .string(record.rawProperties),
            "body": .string(message.payload.base64EncodedString()),
            "redelivered": .bool(record.redelivered),
            "messageSource": .string(record.source.rawValue),
        ]
        let optional: [(String, String?)] = [
            ("moduleId", record.moduleId), ("messageId", message.messageId), ("correlationId", message.correlationId),
            ("userId", message.userId), ("contentType", message.contentType),
            ("contentEncoding", message.contentEncoding),
            ("expiryTimeUtc", message.expiryTimeUTC), ("outputName", message.outputName),
            ("interfaceId", message.interfaceId),
            // IoT Plug and Play: IoT Hub's `dt-subject` (from `$.sub`) and `dt-dataschema`.
            ("componentName", record.componentName), ("modelId", record.modelId),
        ]
        for (name, value) in optional {
            if let value { members[name] = .string(value) }
        }
        if let text = String(validating: message.payload, as: UTF8.self) { members["bodyText"] = .string(text) }
        return .object(members)
    }
}
