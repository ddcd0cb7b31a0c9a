/// IoT Plug and Play as IoT Hub carries it: the model id a device announces in its MQTT
/// CONNECT, and the names of the conventions devices follow on top of telemetry, the twin and
/// direct methods. Pure values and checks; see docs/ARCHITECTURE.md, "IoT Plug and Play".
public enum PlugAndPlay {
    /// The user-name parameter that carries the model id.
    public static let modelIdParameter = "model-id"
    /// The API version IoT Hub's MQTT endpoint is addressed with when a model id is announced.
    public static let apiVersion = "2020-09-30"
    /// The message property that names the component a telemetry message comes from (IoT Hub
    /// records it as the system property `dt-subject`).
    public static let componentNameProperty = "$.sub"
    /// The member that marks an object of the reported (or desired) properties as a component:
    /// `"__t": "c"`.
    public static let componentMarker = (key: "__t", value: "c")
    /// What separates a component's name from its command's in a direct method's name:
    /// `thermostat1*getMaxMinReport`.
    public static let commandSeparator: Character = "*"
    /// The longest model id (DTDL's limit for an identifier).
    public static let maximumModelIdLength = 2048
    /// The longest component name (DTDL's limit for a name).
    public static let maximumComponentNameLength = 64

    /// The direct-method name of a component's command; the root component's commands have
    /// no prefix.
    public static func methodName(component: String?, command: String) -> String {
        guard let component else { return command }
        return "\(component)\(commandSeparator)\(command)"
    }

    /// Checks that `modelId` is a DTMI as IoT Plug and Play uses them:
    /// `dtmi:<segment>(:<segment>)*;<version>`, where a segment starts with a letter, holds only
    /// ASCII letters, digits and `_` and does not end with `_`, and the version is 1 to
    /// 999999999, optionally `.` and a minor version of 1 to 6 digits (no leading zeros).
    ///
    /// - Throws: ``IoTHubError/valueError(field:reason:)`` naming `field` and what is wrong
    ///   (which segment, or the version), without repeating the id.
    public static func validateModelId(_ modelId: String, field: String = "model_id") throws(IoTHubError) {
        guard modelId.utf8.count <= maximumModelIdLength else {
            throw .valueError(field: field, reason: "is longer than \(maximumModelIdLength) characters")
        }
        guard modelId.hasPrefix("dtmi:") else {
            throw .valueError(
                field: field, reason: "must start with 'dtmi:' (a DTMI, e.g. 'dtmi:com:example:Thermostat;1')")
        }
        let rest = modelId.dropFirst("dtmi:".count)
        guard let semicolon = rest.lastIndex(of: ";") else {
            throw .valueError(
                field: field, reason: "needs ';' and a version after its path (e.g. 'dtmi:com:example:Thermostat;1')")
        }
        let segments = rest[..<semicolon].split(separator: ":", omittingEmptySubsequences: false)
        for (index, segment) in segments.enumerated() where !isName(segment, maximumLength: Int.max) {
            throw .valueError(
                field: field,
                reason:
                    "has an invalid path segment (number \(index + 1)): a segment starts with a letter, holds only letters, digits and '_', and does not end with '_'"
            )
        }
        guard isVersion(rest[rest.index(after: semicolon)...]) else {
            throw .valueError(
                field: field,
                reason:
                    "has an invalid version: 1 to 999999999 without leading zeros, optionally '.' and a minor version")
        }
    }

    /// Checks that `name` is a DTDL name, as a component's name must be: a letter, then
    /// letters, digits and `_`, not ending with `_`, at most 64 characters.
    public static func validateComponentName(_ name: String, field: String) throws(IoTHubError) {
        guard isComponentName(name) else {
            throw .valueError(
                field: field,
                reason:
                    "is not a component name: a letter, then letters, digits and '_' (not last), at most \(maximumComponentNameLength) characters"
            )
        }
    }

    /// Whether `name` is a DTDL name (see ``validateComponentName(_:field:)``).
    public static func isComponentName(_ name: String) -> Bool {
        isName(name[...], maximumLength: maximumComponentNameLength)
    }

    static func isName(_ text: Substring, maximumLength: Int) -> Bool {
        let bytes = Array(text.utf8)
        guard let first = bytes.first, let last = bytes.last, bytes.count <= maximumLength, isLetter(first),
            last != UInt8(ascii: "_")
        else { return false }
        return bytes.allSatisfy { isLetter($0) || isDigit($0) || $0 == UInt8(ascii: "_") }
    }

    static func isVersion(_ text: Substring) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2 else { return false }
        for (index, part) in parts.enumerated() {
            let bytes = Array(part.utf8)
            let limit = index == 0 ? 9 : 6
            guard let first = bytes.first, first != UInt8(ascii: "0"), bytes.count <= limit, bytes.allSatisfy(isDigit)
            else { return false }
        }
        return true
    }

    private static func isLetter(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
    }

    private static func isDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }
}
