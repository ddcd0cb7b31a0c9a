import AsyncPrimitives
import Foundation
import IoTHubProtocol
import NIOCore
import NIOFoundationCompat

extension Hub {
    /// Reported or desired properties may not exceed this size, as in IoT Hub.
    static let twinSectionLimit = 32 * 1024

    /// Answers a device's twin GET or reported-properties PATCH.
    ///
    /// A reported patch that is applied emits a twin change notification (`updateTwin`) with
    /// the patch, the reported properties' new `$version` and the twin's new version.
    func handleTwinRequest(
        from connection: DeviceConnection, _ request: TwinRequestTopic, payload: ByteBuffer, now: Date = Date()
    ) {
        let key = connection.key
        let outgoing = state.withLockedValue { state -> (DeviceConnection, MQTTPacket)? in
            let response: (status: Int, version: Int?, body: Data)
            if state.faults.takeThrottle() {
                response = (
                    429, nil,
                    Data(#"{"errorCode":429001,"message":"Throttled by the local hub's fault injection"}"#.utf8)
                )
            } else if var record = state.identities[key] {
                switch request.operation {
                case .get:
                    response = (200, nil, Twin(desired: record.desired, reported: record.reported).encoded())
                case .patchReportedProperties:
                    let patch = (try? JSONValue(parsing: Data(payload.readableBytesView)))?.objectValue
                    if let patch {
                        var reported = record.reported
                        reported.apply(patch: patch)
                        if reported.json.encoded().count > Self.twinSectionLimit {
                            response = (
                                400, nil,
                                Data(#"{"errorCode":400004,"message":"The reported properties exceed 32 KB"}"#.utf8)
                            )
                        } else {
                            record.reported = reported
                            record.twinVersion += 1
                            state.identities[key] = record
                            response = (204, reported.version, Data())
                            route(.twinChangeEvents, in: state) {
                                var changed = patch
                                changed["$version"] = .integer(Int64(reported.version))
                                let body: JSONValue = [
                                    "version": .integer(Int64(record.twinVersion)),
                                    "properties": ["reported": .object(changed)],
                                ]
                                return .twinChange(key, operation: .updateTwin, body: body, at: now)
                            }
                        }
                    } else {
                        response = (
                            400, nil,
                            Data(#"{"errorCode":400004,"message":"The reported patch is not a JSON object"}"#.utf8)
                        )
                    }
                }
            } else {
                response = (404, nil, Data())
            }
            let topic = TwinResponseTopic(
                status: response.status, requestId: request.requestId, version: response.version)
            return Self.preparePublish(
                in: &state, to: key, topic: topic.name, payload: ByteBuffer(data: response.body), kind: .transient)
        }
        if request.operation == .patchReportedProperties { stateChanged() }
        if let (target, packet) = outgoing { target.send([packet]) }
    }

    /// Applies a desired-properties patch from the service side and pushes it to the device.
    ///
    /// Emits a twin change notification: `replaceTwin` with the whole twin, or `updateTwin`
    /// with the changed desired properties (and their new `$version`) and tags.
    /// - Returns: the updated record.
    func patchDesired(
        _ key: IdentityKey, patch: [String: JSONValue], tags: [String: JSONValue]?, replace: Bool, ifMatch: String?,
        now: Date = Date()
    ) throws(ServiceError) -> IdentityRecord {
        let (record, outgoing) = try state.withLock {
            state throws(ServiceError) -> (IdentityRecord, (DeviceConnection, MQTTPacket)?) in
            guard var record = state.identities[key] else { throw .notFound(key) }
            guard ETag.matches(ifMatch, current: record.twinEtag) else {
                throw .preconditionFailed("the twin's etag is \(record.twinEtag)")
            }
            var desired = record.desired
            var pushed: [String: JSONValue] = [:]
            if replace {
                // PUT replaces the desired properties; the device sees the new document.
                var patchAll = patch
                for existing in desired.properties.keys where patch[existing] == nil { patchAll[existing] = .null }
                desired.properties = patch.filter { !$0.key.hasPrefix("$") }
                desired.version += 1
                pushed = patchAll
            } else if !patch.filter({ $0.key != "$version" }).isEmpty {
                // A patch of tags only leaves the desired properties and their version alone.
                desired.apply(patch: patch)
                pushed = patch
            }
            pushed.removeValue(forKey: "$version")
            if desired.json.encoded().count > Self.twinSectionLimit {
                throw .badRequest("the desired properties exceed 32 KB")
            }
            let changedDesired = desired != record.desired
            record.desired = desired
            if let tags {
                record.tags =
                    replace ? tags : (JSONValue.object(record.tags).merging(.object(tags)).objectValue ?? record.tags)
            }
            record.twinVersion += 1
            state.identities[key] = record
            if replace {
                route(.twinChangeEvents, in: state) {
                    .twinChange(
                        key, operation: .replaceTwin, body: HubEvent.twinDocument(record, withTags: true), at: now)
                }
            } else if changedDesired || tags != nil {
                route(.twinChangeEvents, in: state) {
                    var body: [String: JSONValue] = ["version": .integer(Int64(record.twinVersion))]
                    if let tags { body["tags"] = .object(tags) }
                    if changedDesired {
                        var changed = patch
                        changed["$version"] = .integer(Int64(desired.version))
                        body["properties"] = ["desired": .object(changed)]
                    }
                    return .twinChange(key, operation: .updateTwin, body: .object(body), at: now)
                }
            }
            guard changedDesired || replace else { return (record, nil) }
            pushed["$version"] = .integer(Int64(desired.version))
            let topic = DesiredPropertiesPatchTopic(version: desired.version).name
            let outgoing = Self.preparePublish(
                in: &state, to: key, topic: topic, payload: ByteBuffer(data: JSONValue.object(pushed).encoded()),
                kind: .transient)
            return (record, outgoing)
        }
        stateChanged()
        if let (target, packet) = outgoing { target.send([packet]) }
        return record
    }
}
