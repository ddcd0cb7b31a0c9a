import CMalloc
import ServiceLifecycle

/// How the sidecar's allocator gives memory back (docs/PERFORMANCE.md, "Store and forward").
///
/// glibc serves a block of 128 KiB or more from a mapping of its own, returned when freed, but
/// once such a block is freed it raises that threshold to the block's size (up to 32 MiB) and
/// its trim threshold to twice that. After the first large request (a batch of 100 messages of
/// 10 kB is a 1 MB body, a 1 MB frame, a larger group write) every later one is carved from the
/// arena of the thread that asked (SwiftNIO's event loops, the cooperative pool, the log's
/// writer), and what is freed there stays with the process. A fixed threshold keeps large
/// blocks in mappings of their own; fewer arenas keep less freed space in reserve; and
/// ``AllocatorTrimming`` hands back what smaller blocks left free between blocks in use.
enum AllocatorPolicy {
    /// Blocks from this size on get a mapping of their own.
    static let mmapThreshold: Int32 = 128 << 10
    /// Arenas (glibc's default: 8 per core).
    static let arenas: Int32 = 2

    /// Whether the environment already tunes glibc's allocator (`GLIBC_TUNABLES` with
    /// `glibc.malloc.`, or a `MALLOC_…` variable): then an operator's choice wins and the sidecar
    /// changes nothing.
    static func isTunedByEnvironment(_ environment: [String: String]) -> Bool {
        environment["GLIBC_TUNABLES"]?.contains("glibc.malloc.") == true
            || environment.keys.contains { $0.hasPrefix("MALLOC_") }
    }

    /// Sets the thresholds and the arenas; returns false (nothing set) when the environment
    /// tunes the allocator.
    @discardableResult
    static func apply(environment: [String: String]) -> Bool {
        guard !isTunedByEnvironment(environment) else { return false }
        _ = mallopt(M_MMAP_THRESHOLD, mmapThreshold)
        _ = mallopt(M_ARENA_MAX, arenas)
        return true
    }
}

/// Gives the allocator's free memory back to the system every few seconds when there is enough
/// of it (`malloc_trim`): the space a burst of requests freed between blocks still in use
/// otherwise stays resident. Ends at graceful shutdown.
struct AllocatorTrimming: Service {
    var interval: Duration = .seconds(5)
    /// Free bytes inside the arenas from which a trim is worth its walk over them.
    var worthwhile = 4 << 20

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try await Task.sleep(for: interval)
                if Int(mallinfo2().fordblks) >= worthwhile { _ = malloc_trim(0) }
            }
        }
    }
}
