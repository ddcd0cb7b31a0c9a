import Foundation
import Logging
import NIOConcurrencyHelpers

/// Writes the hub's persisted state to `state.json` in the background, coalescing bursts of
/// changes into one write, and once more at shutdown.
final class StatePersistence: Sendable {
    private let directory: DataDirectory
    private let logger: Logger
    private let snapshot: NIOLockedValueBox<(@Sendable () -> PersistedState)?> = NIOLockedValueBox(nil)
    private let dirty: AsyncStream<Void>.Continuation
    private let stream: AsyncStream<Void>
    /// The writer started by ``start()``.
    private let writer = NIOLockedValueBox<Task<Void, Never>?>(nil)

    init(directory: DataDirectory, logger: Logger) {
        self.directory = directory
        self.logger = logger
        (stream, dirty) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Loads `state.json`; nil if there is none yet.
    func load() throws(LocalHubError) -> PersistedState? {
        guard let data = try directory.read(directory.state) else { return nil }
        do {
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            return try decoder.decode(PersistedState.self, from: data)
        } catch {
            throw .dataDirectory(
                "\(directory.state.path) is not a state file this version can read (\(error)); move it away to start afresh"
            )
        }
    }

    /// Sets where snapshots come from.
    func attach(_ source: @escaping @Sendable () -> PersistedState) {
        snapshot.withLockedValue { $0 = source }
    }

    func markDirty() {
        dirty.yield()
    }

    /// Starts writing in the background: once now, then whenever marked dirty, until ``finish()``.
    func start() {
        markDirty()
        writer.withLockedValue { writer in
            if writer == nil { writer = Task { await self.run() } }
        }
    }

    /// Writes whenever marked dirty, until `finish()`; then writes a last time.
    private func run() async {
        for await _ in stream {
            write()
            // Coalesce: at most one write every 50 ms under a burst of changes.
            try? await Task.sleep(for: .milliseconds(50))
        }
        write()
    }

    /// Stops the background writer after a last write, and waits for it.
    func finish() async {
        dirty.finish()
        let task = writer.withLockedValue { writer in
            defer { writer = nil }
            return writer
        }
        await task?.value
    }

    func write() {
        guard let source = snapshot.withLockedValue({ $0 }) else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        do {
            try directory.write(try encoder.encode(source()), to: directory.state)
        } catch {
            logger.error("cannot save the hub state", metadata: ["error": "\(error)"])
        }
    }
}
