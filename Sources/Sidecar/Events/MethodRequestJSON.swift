import IoTHubProtocol

/// The JSON of a direct-method request (`GET /methods`, `event: method`).
enum MethodRequestJSON {
    static func json(_ request: MethodRequest) -> JSONValue {
        let payload: JSONValue
        if request.payload.isEmpty {
            payload = .null
        } else if let parsed = try? JSONValue(parsing: request.payload) {
            payload = parsed
        } else {
            payload = .string(String(decoding: request.payload, as: UTF8.self))
        }
        return ["requestId": .string(request.requestId), "methodName": .string(request.name), "payload": payload]
    }
}
