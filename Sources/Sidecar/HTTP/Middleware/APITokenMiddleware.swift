import HTTPTypes
import Hummingbird

/// Checks `Authorization: Bearer <token>` in constant time; `/healthz` and `/readyz` are open.
struct APITokenMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let token: String

    // Concurrent, as Hummingbird declares the requirement (the package builds nonisolated async
    // functions as nonisolated(nonsending) otherwise).
    @concurrent func handle(
        _ request: Request, context: Context, next: @concurrent (Request, Context) async throws -> Response
    ) async throws
        -> Response
    {
        let path = request.uri.path
        if path == "/healthz" || path == "/readyz" { return try await next(request, context) }
        let given = request.headers[.authorization] ?? ""
        let prefix = "bearer "
        guard given.count > prefix.count, given.prefix(prefix.count).lowercased() == prefix,
            Self.constantTimeEqual(Array(given.utf8.dropFirst(prefix.count)), Array(token.utf8))
        else {
            throw ProblemDetails(
                status: 401, code: "Unauthorized", detail: "send the API token as Authorization: Bearer <token>")
        }
        return try await next(request, context)
    }

    /// Compares without stopping at the first difference, so timing says nothing about the token.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(a.count == b.count ? 0 : 1)
        for index in 0..<max(a.count, b.count) {
            difference |= (index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0)
        }
        return difference == 0
    }
}
