import HTTPTypes
import Hummingbird

/// The API's routes as they were registered with the router: what `Allow` headers list, and
/// what the contract test compares with `openapi/sidecar.yaml`. Recorded by ``RouteRecorder``,
/// so there is no second list to keep in step.
struct RouteTable: Sendable {
    /// One operation: a method on a path in the router's form (`/inbox/{lockToken}`,
    /// `/blob/**`).
    struct Route: Sendable, Hashable {
        var method: HTTPRequest.Method
        var path: String

        /// The path as the OpenAPI contract writes it: the one catch-all route, the blob
        /// upload's, names its parameter `blobName`.
        var documentedPath: String {
            path.hasSuffix("/**") ? String(path.dropLast(2)) + "{\(RouteTable.catchAllParameter)}" : path
        }
    }

    /// What the contract calls the path a catch-all (`**`) matches.
    static let catchAllParameter = "blobName"

    let routes: [Route]

    /// The methods of the route `path` matches (`GET, PATCH`), when it matches one. A
    /// catch-all takes a path of any depth, but only where no other route matches.
    func allowedMethods(for path: String) -> String? {
        let segments = path.split(separator: "/", omittingEmptySubsequences: false)
        func matches(_ route: Route) -> Bool {
            let parts = route.path.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == segments.count else { return false }
            return zip(parts, segments).allSatisfy { $0.hasPrefix("{") || $0 == $1 }
        }
        func matchesCatchAll(_ route: Route) -> Bool {
            guard route.path.hasSuffix("/**") else { return false }
            let prefix = route.path.dropLast(3).split(separator: "/", omittingEmptySubsequences: false)
            return segments.count > prefix.count && zip(prefix, segments).allSatisfy { $0.hasPrefix("{") || $0 == $1 }
        }
        var matched = routes.filter(matches)
        if matched.isEmpty { matched = routes.filter(matchesCatchAll) }
        return matched.isEmpty ? nil : matched.map(\.method.rawValue).joined(separator: ", ")
    }
}

/// A router that records every route added to it before handing it on: groups made from it
/// (`recorder.group("inbox")`) add their routes through it with their whole path.
final class RouteRecorder<Context: RequestContext>: RouterMethods {
    /// Where the routes go: added to the application's router once its middleware is in place.
    let collection = RouteCollection(context: Context.self)
    private var recorded: [RouteTable.Route] = []

    /// The routes recorded so far.
    var table: RouteTable { RouteTable(routes: recorded) }

    @discardableResult
    func on<Responder: HTTPResponder>(_ path: RouterPath, method: HTTPRequest.Method, responder: Responder) -> Self
    where Responder.Context == Context {
        _ = collection.on(path, method: method, responder: responder)
        recorded.append(RouteTable.Route(method: method, path: path.description))
        return self
    }

    @discardableResult
    func add(middleware: any MiddlewareProtocol<Request, Response, Context>) -> Self {
        collection.add(middleware: middleware)
        return self
    }
}
