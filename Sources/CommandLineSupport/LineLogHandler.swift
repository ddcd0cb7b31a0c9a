package import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// One line per event on standard error: `time level label: key=value … [source] message`.
///
/// Like swift-log's `StreamLogHandler`, but metadata set on a logger is only rendered when a
/// line is actually written: the HTTP server sets request metadata on its logger for every
/// request, and rendering it each time cost several percent of a request's CPU time.
package struct LineLogHandler: LogHandler {
    package let label: String
    package var logLevel: Logger.Level
    package var metadata: Logger.Metadata = [:]
    package var metadataProvider: Logger.MetadataProvider?

    package init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    package subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    package func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let fields = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let line =
            "\(Self.timestamp()) \(event.level) \(label):\(fields.isEmpty ? "" : " " + fields) [\(event.source)] \(event.message)\n"
        StandardStreams.writeError(line)
    }

    private static func timestamp() -> String {
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        var buffer = [Int8](repeating: 0, count: 32)
        let length = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%SZ", &parts)
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
