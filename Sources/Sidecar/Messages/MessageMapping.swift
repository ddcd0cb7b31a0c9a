import FoundationEssentials
import HTTPTypes
import IoTHubProtocol

/// How messages travel over the sidecar's HTTP API: properties as `iothub-*` headers (the names
/// of IoT Hub's own HTTPS device API), or as members of a batch envelope entry.
enum MessageMapping {
    /// The media type of IoT Hub's batch envelope.
    static let batchMediaType = "application/vnd.microsoft.iothub.json"

    /// `iothub-app-$.sub`: the same property as `iothub-componentname`.
    static let componentNameAlias = "iothub-app-" + PlugAndPlay.componentNameProperty
    static let componentNameTwice =
        "iothub-componentname and iothub-app-$.sub are the same property ($.sub, the Plug and Play component); give one"

    /// A message from `(name, value)` pairs with `iothub-*` names.
    /// - Parameters:
    ///   - isModule: whether the sidecar's identity is a module (only modules have outputs).
    ///   - defaultContentType: the content type when no `iothub-contenttype` is given.
    ///   - othersAreErrors: whether a name without `iothub-` is refused (a batch entry's
    ///     properties) or skipped (request headers).
    static func message(
        payload: Data, properties: some Sequence<(name: String, value: String)>, isModule: Bool,
        defaultContentType: String? = nil,
        othersAreErrors: Bool = false
    ) throws(ProblemDetails) -> Message {
        var message = Message(payload: payload)
        var seen = Set<String>()
        for (name, value) in properties {
            let lower = name.lowercased()
            guard lower.hasPrefix("iothub-") else {
                if othersAreErrors { throw .invalid("\(name) is not a message property", field: name) }
                continue
            }
            guard seen.insert(lower.hasPrefix("iothub-app-") ? "iothub-app-" + name.dropFirst(11) : lower).inserted
            else {
                throw .invalid("the property \(name) is given twice", field: name)
            }
            switch lower {
            case "iothub-messageid":
                guard !value.isEmpty else { throw .invalid("iothub-messageid is empty", field: name) }
                message.messageId = value
            case "iothub-correlationid": message.correlationId = value
            case "iothub-userid": message.userId = value
            case "iothub-contenttype": message.contentType = value
            case "iothub-contentencoding": message.contentEncoding = value
            case "iothub-expiry": message.expiryTimeUTC = value
            case "iothub-interfaceid":
                // Only the security agent's interface id: it makes a security message (the
                // Python SDK's set_as_security_message); IoT Hub gives no other meaning to $.ifid.
                guard value == Message.securityMessageInterfaceId else {
                    throw .invalid(
                        "iothub-interfaceid can only be \(Message.securityMessageInterfaceId), which marks a security message",
                        field: name)
                }
                message.setAsSecurityMessage()
            case "iothub-componentname":
                // IoT Plug and Play: the component the telemetry comes from, `$.sub` on the wire.
                guard PlugAndPlay.isComponentName(value) else {
                    throw .invalid(
                        "iothub-componentname is not a component name: a letter, then letters, digits and '_' (not last), at most \(PlugAndPlay.maximumComponentNameLength) characters",
                        field: name)
                }
                guard seen.insert(Self.componentNameAlias).inserted else {
                    throw .invalid(Self.componentNameTwice, field: name)
                }
                message.componentName = value
            case "iothub-outputname":
                guard isModule else {
                    throw .invalid("iothub-outputname is for module identities; this sidecar is a device", field: name)
                }
                guard !value.isEmpty else { throw .invalid("iothub-outputname is empty", field: name) }
                message.outputName = value
            default:
                guard lower.hasPrefix("iothub-app-") else {
                    throw .invalid(
                        "\(name) is not a message property (iothub-messageid, iothub-correlationid, iothub-userid, iothub-contenttype, iothub-contentencoding, iothub-expiry, iothub-interfaceid, iothub-outputname, iothub-componentname, iothub-app-<name>)",
                        field: name)
                }
                let key = String(name.dropFirst("iothub-app-".count))
                guard !key.isEmpty else {
                    throw .invalid("an application property needs a name after iothub-app-", field: name)
                }
                message.properties[key] = value
            }
        }
        if message.contentType == nil { message.contentType = defaultContentType }
        if message.messageId == nil { message.messageId = MessageIdentifiers.next() }
        return message
    }

    /// A single message from a `POST /messages` request: the body and its headers.
    static func message(payload: Data, headers: HTTPFields, isModule: Bool) throws(ProblemDetails) -> Message {
        // Only `iothub-` fields go on (the others are skipped anyway), and no field is looked up
        // by name through `headers[name]` (docs/PERFORMANCE.md, "Work per request").
        for field in headers where field.name == .contentType || field.name.canonicalName.hasPrefix("iothub-") {
            try requireUTF8(field)
        }
        let contentType = headers.joinedValue(of: .contentType)
        let pairs = headers.lazy.filter { $0.name.canonicalName.hasPrefix("iothub-") }.map {
            (name: $0.name.rawName, value: $0.value)
        }
        return try message(payload: payload, properties: pairs, isModule: isModule, defaultContentType: contentType)
    }

    /// Refuses a header value that was not valid UTF-8. The HTTP server hands header values on
    /// as text, with every byte sequence that is not UTF-8 already replaced by U+FFFD: a value
    /// holding U+FFFD is refused, so that a replacement is never sent as if the client had
    /// written it (U+FFFD itself can be sent in a batch, whose JSON is read byte by byte).
    static func requireUTF8(_ field: HTTPField) throws(ProblemDetails) {
        // U+FFFD is EF BF BD in UTF-8: values without 0xEF (nearly all) are done in one pass.
        let value = field.value
        guard value.utf8.contains(0xEF), value.unicodeScalars.contains("\u{FFFD}") else { return }
        let name = field.name.rawName
        throw .invalid(
            "the value of \(name) is not valid UTF-8 (U+FFFD is refused too: it stands for bytes that were not)",
            field: name)
    }

    /// The messages of a batch envelope, each checked like a single message; any invalid
    /// entry rejects the whole batch (nothing is sent).
    static func batch(_ data: Data, isModule: Bool) throws(ProblemDetails) -> [Message] {
        let entries: [BatchEnvelopeParser.Entry]
        do throws(BatchEnvelopeParser.Failure) {
            entries = try BatchEnvelopeParser.entries(in: data)
        } catch {
            throw .invalid(
                error.isSyntaxError
                    ? "the batch is not valid JSON (a syntax error): \(error.reason)"
                    : "the batch is not a JSON array of {body, base64Encoded, properties}: \(error.reason)")
        }
        guard !entries.isEmpty else { throw .invalid("the batch is empty") }
        var messages: [Message] = []
        messages.reserveCapacity(entries.count)
        for (index, entry) in entries.enumerated() {
            let payload: Data
            if entry.base64Encoded {
                guard let decoded = Data(base64Encoded: entry.body) else {
                    throw .invalid("entry \(index): body is not valid base64", field: "[\(index)].body")
                }
                payload = decoded
            } else {
                payload = entry.body
            }
            do {
                messages.append(
                    try message(
                        payload: payload, properties: entry.properties, isModule: isModule, othersAreErrors: true))
            } catch {
                var problem = error
                problem.detail = "entry \(index): " + problem.detail
                problem.field = problem.field.map { "[\(index)].properties.\($0)" }
                throw problem
            }
        }
        return messages
    }

    /// Says how many of a received message's properties the headers of `GET /inbox` could not
    /// carry exactly (a name that is not a header token, a value with control characters or
    /// with spaces at either end); `Accept: application/json` carries them all.
    static let inexactPropertiesField = HTTPField.Name("iothub-inexact-properties") ?? .contentType

    /// The response headers that carry a received message's properties (`GET /inbox`). A
    /// property they cannot carry exactly is left out, and ``inexactPropertiesField`` counts it.
    static func headers(for message: Message) -> HTTPFields {
        var fields = HTTPFields()
        var inexact = 0
        func add(_ name: String, _ value: String?) {
            guard let value else { return }
            guard let fieldName = HTTPField.Name(name), HTTPField.isValidValue(value),
                value.first.map({ $0 != " " && $0 != "\t" }) ?? true,
                value.last.map({ $0 != " " && $0 != "\t" }) ?? true
            else {
                inexact += 1
                return
            }
            fields.append(HTTPField(name: fieldName, value: value))
        }
        add("iothub-messageid", message.messageId)
        add("iothub-correlationid", message.correlationId)
        add("iothub-to", message.to)
        add("iothub-userid", message.userId)
        add("iothub-contenttype", message.contentType)
        add("iothub-contentencoding", message.contentEncoding)
        add("iothub-expiry", message.expiryTimeUTC)
        add("iothub-ack", message.ack)
        add("iothub-inputname", message.inputName)
        for (key, value) in message.properties.sorted(by: { $0.key < $1.key }) {
            add("iothub-app-" + key, value)
        }
        if inexact > 0 { fields[inexactPropertiesField] = String(inexact) }
        return fields
    }
}
