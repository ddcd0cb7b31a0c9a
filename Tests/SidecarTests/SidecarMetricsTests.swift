import Testing

@testable import Sidecar

@Suite struct SidecarMetricsTests {
    @Test func metricsRenderInTheTextFormat() {
        let metrics = SidecarMetrics()
        metrics.increment(.httpRequests, labels: [("method", "GET"), ("route", "/x\"y"), ("status", "200")])
        metrics.increment(.messagesSent, by: 2)
        let text = metrics.exposition()
        #expect(text.contains(#"iothub_sidecar_http_requests_total{method="GET",route="/x\"y",status="200"} 1"#))
        #expect(text.contains("iothub_sidecar_messages_sent_total 2\n"))
        #expect(text.contains("# TYPE iothub_sidecar_connected gauge\niothub_sidecar_connected 0\n"))
    }

    @Test func countedRequestsJoinTheirFamily() {
        let metrics = SidecarMetrics()
        metrics.countRequest(method: "POST", route: "/messages", status: 200)
        metrics.countRequest(method: "POST", route: "/messages", status: 200)
        metrics.countRequest(method: "POST", route: "/messages", status: 503)
        metrics.increment(.httpRequests, labels: [("method", "POST"), ("route", "/messages"), ("status", "200")])
        let text = metrics.exposition()
        #expect(text.contains(#"iothub_sidecar_http_requests_total{method="POST",route="/messages",status="200"} 3"#))
        #expect(text.contains(#"iothub_sidecar_http_requests_total{method="POST",route="/messages",status="503"} 1"#))
        #expect(text.ranges(of: "# TYPE iothub_sidecar_http_requests_total").count == 1)
    }
}
