public import FoundationEssentials

/// A device or module twin as the device sees it: desired and reported properties, each with
/// its `$version`.
public struct Twin: Sendable, Hashable, Codable {
    public var desired: TwinProperties
    public var reported: TwinProperties

    public init(desired: TwinProperties = TwinProperties(), reported: TwinProperties = TwinProperties()) {
        self.desired = desired
        self.reported = reported
    }

    /// Parses the body of a twin GET response.
    public init(parsing data: Data) throws(IoTHubError) {
        guard let root = try JSONValue(parsing: data).objectValue else {
            throw .valueError(field: "twin", reason: "is not a JSON object")
        }
        self.init(
            desired: try TwinProperties(root["desired"] ?? .object([:]), section: "desired"),
            reported: try TwinProperties(root["reported"] ?? .object([:]), section: "reported"))
    }

    /// The JSON body of a twin GET response.
    public func encoded() -> Data {
        JSONValue.object(["desired": desired.json, "reported": reported.json]).encoded()
    }
}

/// One side of a twin: a JSON object of properties and the `$version` the hub gave it.
/// Metadata members the hub may add (`$metadata`) stay in ``properties``.
public struct TwinProperties: Sendable, Hashable, Codable {
    /// The properties, without `$version`.
    public var properties: [String: JSONValue]
    /// The version; it grows by one with every change.
    public var version: Int

    public init(properties: [String: JSONValue] = [:], version: Int = 1) {
        self.properties = properties
        self.version = version
    }

    /// Reads a JSON object that carries `$version` among its members.
    public init(_ json: JSONValue, section: String = "properties") throws(IoTHubError) {
        guard var members = json.objectValue else {
            throw .valueError(field: section, reason: "is not a JSON object")
        }
        let version = members.removeValue(forKey: "$version")
        guard let version = version?.intValue else {
            throw .valueError(field: section, reason: "has no integer $version")
        }
        self.init(properties: members, version: version)
    }

    /// The properties with `$version` among them, as IoT Hub writes them.
    public var json: JSONValue {
        var members = properties
        members["$version"] = .integer(Int64(version))
        return .object(members)
    }

    /// Applies a patch (merge semantics, `null` deletes) and moves to the next version.
    /// A `$version` member in the patch is ignored: the hub sets versions.
    public mutating func apply(patch: [String: JSONValue]) {
        var patch = patch
        patch.removeValue(forKey: "$version")
        if case .object(let merged) = JSONValue.object(properties).merging(.object(patch)) {
            properties = merged
        }
        version += 1
    }

    public init(from decoder: any Decoder) throws {
        let json = try JSONValue(from: decoder)
        do {
            try self.init(json)
        } catch {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        try json.encode(to: encoder)
    }
}
