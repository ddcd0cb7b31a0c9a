import NIOHTTP1

/// Matches requests to handlers by method and path pattern. A pattern segment `:name` matches
/// one path segment; a final `*name` matches the rest of the path (for blob names with `/`).
struct Router: Sendable {
    typealias Handler = @Sendable (RouterRequest, Parameters) async throws(ServiceError) -> RouterResponse

    struct Parameters: Sendable {
        var values: [String: String] = [:]

        subscript(_ name: String) -> String {
            values[name] ?? ""
        }
    }

    private struct Route: Sendable {
        var method: HTTPMethod
        var pattern: [Substring]
        var handler: Handler
    }

    private var routes: [Route] = []

    mutating func add(_ method: HTTPMethod, _ pattern: String, _ handler: @escaping Handler) {
        routes.append(Route(method: method, pattern: pattern.split(separator: "/"), handler: handler))
    }

    /// Runs the matching handler; 404 for an unknown path, 405 for a known path with another method.
    func respond(to request: RouterRequest) async -> RouterResponse {
        var allowed: [String] = []
        for route in routes {
            guard let parameters = Self.match(route.pattern, request.pathSegments) else { continue }
            guard route.method == request.method else {
                allowed.append(route.method.rawValue)
                continue
            }
            do {
                return try await route.handler(request, parameters)
            } catch {
                return .error(error)
            }
        }
        if !allowed.isEmpty {
            var response = RouterResponse.error(
                .badRequest("method \(request.method.rawValue) is not allowed on \(request.path)")
            )
            .withStatus(.methodNotAllowed)
            response.headers.replaceOrAdd(name: "Allow", value: allowed.joined(separator: ", "))
            return response
        }
        return .error(.resourceNotFound("no such resource: \(request.path)"))
    }

    private static func match(_ pattern: [Substring], _ segments: [String]) -> Parameters? {
        var parameters = Parameters()
        var index = 0
        for (position, part) in pattern.enumerated() {
            if part.hasPrefix("*") {
                guard index < segments.count, position == pattern.count - 1 else { return nil }
                parameters.values[String(part.dropFirst())] = segments[index...].joined(separator: "/")
                return parameters
            }
            guard index < segments.count else { return nil }
            if part.hasPrefix(":") {
                parameters.values[String(part.dropFirst())] = segments[index]
            } else if part != segments[index] {
                return nil
            }
            index += 1
        }
        return index == segments.count ? parameters : nil
    }
}
