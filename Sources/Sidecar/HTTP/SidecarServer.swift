public import Foundation
import HTTPTypes
public import Hummingbird
import HummingbirdCore
public import IoTHubProtocol
public import Logging
import NIOCore

/// Where the sidecar listens: a TCP address (`127.0.0.1:8080`) or a unix socket
/// (`unix:/run/iothub/sidecar.sock`).
public enum ListenAddress: Sendable, Equatable, CustomStringConvertible {
    case tcp(host: String, port: Int)
    case unix(path: String)

    /// Parses `host:port`, `[v6]:port`, `:port` (loopback) or `unix:/path`.
    public init(parsing text: String) throws(IoTHubError) {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard !path.isEmpty else { throw .valueError(field: "--listen", reason: "unix: needs a socket path") }
            self = .unix(path: path)
            return
        }
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw .valueError(field: "--listen", reason: "must be HOST:PORT (such as 127.0.0.1:8080) or unix:/path/to.sock")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self = .tcp(host: host.isEmpty ? "127.0.0.1" : host, port: port)
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): host.contains(":") ? "http://[\(host)]:\(port)" : "http://\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }

    var bindAddress: BindAddress {
        switch self {
        case .tcp(let host, let port): .hostname(host, port: port)
        case .unix(let path): .unixDomainSocket(path: path)
        }
    }
}

/// How the HTTP side of the sidecar runs.
public struct SidecarServerConfiguration: Sendable {
    public var listen: ListenAddress
    /// When set, every request except `/healthz` and `/readyz` needs `Authorization: Bearer <token>`.
    public var apiToken: String?
    /// Connections idle this long are closed; long-polls stay below it.
    public var idleTimeout: Duration
    /// A request whose body stops arriving for this long while the server waits for it is
    /// answered 408 and its connection closed. Only useful below ``idleTimeout``, which ends a
    /// request making no progress too, silently.
    public var requestBodyTimeout: Duration

    public init(
        listen: ListenAddress = .tcp(host: "127.0.0.1", port: 8080), apiToken: String? = nil, idleTimeout: Duration = .seconds(60),
        requestBodyTimeout: Duration = .seconds(30)
    ) {
        self.listen = listen
        self.apiToken = apiToken
        self.idleTimeout = idleTimeout
        self.requestBodyTimeout = requestBodyTimeout
    }
}

/// The sidecar's HTTP application: the routes of ``SidecarAPI`` behind the metrics, problem and
/// token middleware.
public enum SidecarServer {
    /// The OpenAPI document (`openapi/sidecar.yaml`), from the resource bundle SwiftPM puts
    /// next to the executable (`iothub-sidecar_Sidecar.resources`). Looked up by hand rather than
    /// with `Bundle.module`, which stops the process when the bundle is missing: a binary copied
    /// without its bundle still serves, with a one-line stand-in document.
    public static func openAPIDocument() -> Data {
        let executable = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath()
        let candidates = [
            Bundle.main.bundleURL, executable.deletingLastPathComponent(),
        ].map { $0.appendingPathComponent("iothub-sidecar_Sidecar.resources/sidecar.yaml") }
        for candidate in candidates {
            if let data = try? Data(contentsOf: candidate) { return data }
        }
        return Data("openapi: 3.1.0\ninfo: {title: iothub-sidecar, version: unknown, description: the document was not installed next to the executable}\npaths: {}\n".utf8)
    }

    /// Builds the application; run it (with the bridge) in a `ServiceGroup`.
    /// - Parameter onRunning: called with the bound address once the server listens.
    public static func application(
        bridge: DeviceBridge, configuration: SidecarServerConfiguration, logger: Logger,
        onRunning: @escaping @Sendable (String) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: RequestMetricsMiddleware(metrics: bridge.metrics, logger: logger))
        router.add(middleware: ProblemMiddleware(retryAfterSeconds: bridge.retryAfterSeconds, logger: logger))
        if let token = configuration.apiToken {
            router.add(middleware: APITokenMiddleware(token: token))
        }
        SidecarAPI(bridge: bridge, openAPIDocument: openAPIDocument()).register(on: router)
        let http1 = HTTP1Channel.Configuration(idleTimeout: .seconds(configuration.idleTimeout.components.seconds))
        let requestBodyTimeout = configuration.requestBodyTimeout
        let listen = configuration.listen
        return Application(
            router: router,
            server: HTTPServerBuilder { responder in
                SidecarHTTP1Channel(
                    http1: HTTP1Channel(responder: responder, configuration: http1), requestBodyTimeout: requestBodyTimeout, logger: logger)
            },
            configuration: ApplicationConfiguration(address: listen.bindAddress, serverName: nil, reuseAddress: true),
            onServerRunning: { channel in
                do {
                    try await AcceptFailureBackoffHandler.install(on: channel, logger: logger)
                } catch {
                    logger.warning("could not guard the listener against running out of file descriptors", metadata: ["error": "\(error)"])
                }
                let bound: String
                switch listen {
                case .unix: bound = listen.description
                case .tcp(let host, _):
                    bound = ListenAddress.tcp(host: host, port: channel.localAddress?.port ?? 0).description
                }
                await onRunning(bound)
            },
            logger: logger)
    }
}

/// Turns every error into a problem document (`application/problem+json`), with
/// `Retry-After` where the table of DESIGN.md §4 wants it.
struct ProblemMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let retryAfterSeconds: Int
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
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
            if problem.status == 405, let allowed = Self.allowedMethods(for: request.uri.path) {
                headers[.allow] = allowed
            }
            if problem.status >= 500 {
                logger.warning("request failed", metadata: ["path": "\(request.uri.path)", "code": "\(problem.code)", "detail": "\(problem.detail)"])
            }
            return Response(status: .init(code: problem.status), headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: problem.encoded())))
        }
    }

    private func problem(for error: any Error, request: Request) -> ProblemDetails {
        if let parseError = MalformedRequestHandler.parseError(error) {
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
            if let allowed = Self.allowedMethods(for: request.uri.path) {
                return ProblemDetails(status: 405, code: "NotFound", detail: "\(request.method) is not an operation of \(request.uri.path); it takes \(allowed)")
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

    /// The methods of the route `path` matches, when it matches one.
    static func allowedMethods(for path: String) -> String? {
        let segments = path.split(separator: "/", omittingEmptySubsequences: false)
        func matches(_ pattern: String) -> Bool {
            let parts = pattern.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == segments.count else { return false }
            return zip(parts, segments).allSatisfy { $0.hasPrefix("{") || $0 == $1 }
        }
        let blobUpload = "/blob/{blobName}"
        var routes = SidecarAPI.routes.filter { $0.path != blobUpload && matches($0.path) }
        // `/blob/{blobName}` takes a path of any depth, but only where no fixed route is.
        if routes.isEmpty, segments.count >= 3, segments[1] == "blob" {
            routes = SidecarAPI.routes.filter { $0.path == blobUpload }
        }
        let methods = routes.map(\.method.rawValue)
        return methods.isEmpty ? nil : methods.joined(separator: ", ")
    }
}

/// Checks `Authorization: Bearer <token>` in constant time; `/healthz` and `/readyz` are open.
struct APITokenMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let token: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        if path == "/healthz" || path == "/readyz" { return try await next(request, context) }
        let given = request.headers[.authorization] ?? ""
        let prefix = "bearer "
        guard given.count > prefix.count, given.prefix(prefix.count).lowercased() == prefix,
              Self.constantTimeEqual(Array(given.utf8.dropFirst(prefix.count)), Array(token.utf8))
        else {
            throw ProblemDetails(status: 401, code: "Unauthorized", detail: "send the API token as Authorization: Bearer <token>")
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

/// Counts answered requests by method, route and status.
struct RequestMetricsMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let metrics: SidecarMetrics
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let response = try await next(request, context)
        let route = context.endpointPath.map { $0 == "/blob/**" ? "/blob/{blobName}" : $0 } ?? "unmatched"
        metrics.increment(.httpRequests, labels: [("method", request.method.rawValue), ("route", route), ("status", String(response.status.code))])
        logger.debug("request", metadata: ["method": "\(request.method)", "path": "\(request.uri.path)", "status": "\(response.status.code)"])
        return response
    }
}
