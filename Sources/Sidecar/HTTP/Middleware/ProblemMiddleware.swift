import HTTPTypes
import Hummingbird
import IoTHubProtocol
import Logging
import NIOCore

/// Turns every error into a problem document (`application/problem+json`), with
/// `Retry-After` where the error table of docs/ARCHITECTURE.md ("Errors") wants it, and 405
/// with `Allow` for a method the path does not take.
struct ProblemMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    /// The routes, for 405 and `Allow`.
    let routes: RouteTable
    let retryAfterSeconds: Int
    let logger: Logger

    // Concurrent, as Hummingbird declares the requirement (the package builds nonisolated async
    // functions as nonisolated(nonsending) otherwise).
    @concurrent func handle(
        _ request: Request, context: Context, next: @concurrent (Request, Context) async throws -> Response
    ) async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch {
            var problem = problem(for: error, request: request)
            problem.instance = request.uri.path
            var headers = HTTPFields()
            headers[.contentType] = "application/problem+json"
            if problem.closesConnection { headers[.connection] = "close" }
            if let seconds = problem.retryAfterSeconds { headers[.retryAfter] = String(seconds) }
            if problem.status == 401 { headers[.wwwAuthenticate] = #"Bearer realm="iothub-sidecar""# }
            if problem.status == 405, let allowed = routes.allowedMethods(for: request.uri.path) {
                headers[.allow] = allowed
            }
            // A full outbox (507) is logged once per episode by the bridge, not per refusal.
            if problem.status >= 500, problem.status != 507 {
                logger.warning(
                    "request failed",
                    metadata: ["path": "\(request.uri.path)", "code": "\(problem.code)", "detail": "\(problem.detail)"])
            }
            return Response(
                status: .init(code: problem.status), headers: headers,
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: problem.encoded())))
        }
    }

    private func problem(for error: any Error, request: Request) -> ProblemDetails {
        if let parseError = SidecarHTTP1Handler.parseError(error) {
            return .malformedRequest("\(parseError)")
        }
        switch error {
        case let problem as ProblemDetails:
            return problem
        case let error as IoTHubError:
            return ProblemDetails(error, retryAfterSeconds: retryAfterSeconds)
        case let error as RequestBodyTimeout:
            return .requestBodyTimedOut(seconds: error.seconds)
        case let error as HTTPError where error.status == .notFound:
            if let allowed = routes.allowedMethods(for: request.uri.path) {
                return ProblemDetails(
                    status: 405, code: "MethodNotAllowed",
                    detail: "\(request.method) is not an operation of \(request.uri.path); it takes \(allowed)")
            }
            return .notFound("no such endpoint: \(request.method) \(request.uri.path)")
        case is NIOTooManyBytesError:
            return .invalid("the request body is too large", status: 413)
        case let error as HTTPError where error.status == .contentTooLarge:
            return .invalid("the request body is too large", status: 413)
        case let error as HTTPError where (400..<500).contains(error.status.code):
            return .invalid(error.body ?? error.status.reasonPhrase, status: error.status.code)
        default:
            return ProblemDetails(status: 500, code: "ClientError", detail: "the sidecar failed: \(type(of: error))")
        }
    }
}
