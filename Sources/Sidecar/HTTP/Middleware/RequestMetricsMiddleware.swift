import Hummingbird
import Logging

/// Counts answered requests by method, route and status.
struct RequestMetricsMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let metrics: SidecarMetrics
    let logger: Logger

    // Concurrent, as Hummingbird declares the requirement (the package builds nonisolated async
    // functions as nonisolated(nonsending) otherwise).
    @concurrent func handle(
        _ request: Request, context: Context, next: @concurrent (Request, Context) async throws -> Response
    ) async throws
        -> Response
    {
        let response = try await next(request, context)
        let route =
            context.endpointPath.map { RouteTable.Route(method: request.method, path: $0).documentedPath }
            ?? "unmatched"
        metrics.countRequest(method: request.method.rawValue, route: route, status: response.status.code)
        logger.debug(
            "request",
            metadata: [
                "method": "\(request.method)", "path": "\(request.uri.path)", "status": "\(response.status.code)",
            ])
        return response
    }
}
