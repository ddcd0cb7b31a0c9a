import FoundationEssentials
import Hummingbird

/// One area of the REST API (`openapi/sidecar.yaml`): its routes, each a thin mapping of a
/// request onto one ``DeviceBridge`` operation and of its result onto a response. Errors are
/// thrown as ``ProblemDetails`` or `IoTHubError`; ``ProblemMiddleware`` answers them.
protocol RouteArea {
    typealias Context = BasicRequestContext

    func addRoutes(to router: some RouterMethods<Context>)
}

/// Every area of the API, in the order of the contract.
struct SidecarRoutes {
    let bridge: DeviceBridge
    /// The OpenAPI document served at `/openapi.yaml`.
    let openAPIDocument: Data

    var areas: [any RouteArea] {
        [
            TelemetryRoutes(bridge: bridge), InboxRoutes(bridge: bridge), TwinRoutes(bridge: bridge),
            MethodRoutes(bridge: bridge), InvokeRoutes(bridge: bridge),
            BlobRoutes(bridge: bridge), OperationsRoutes(bridge: bridge, openAPIDocument: openAPIDocument),
        ]
    }

    func addRoutes(to router: some RouterMethods<BasicRequestContext>) {
        for area in areas { area.addRoutes(to: router) }
    }
}
