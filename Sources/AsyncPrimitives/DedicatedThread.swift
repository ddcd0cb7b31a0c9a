import Dispatch

#if canImport(Glibc)
    import Glibc
#endif

/// A named thread of its own, for work that blocks (the durable log's writer on the disk, the
/// MQTT network thread in `poll`) and so must not take one of the shared pools' threads. Made
/// with pthreads rather than Foundation's `Thread`, which would link CoreFoundation and ICU's
/// data into the program (docs/PERFORMANCE.md, "Footprint").
public enum DedicatedThread {
    /// Starts `body` on a new detached thread named `name` (at most 15 bytes are kept). Without
    /// a thread (the system's limit reached), `body` runs on a thread of the dispatch pool rather
    /// than never (the log would hang every append).
    public static func start(name: String, _ body: @escaping @Sendable () -> Void) {
        let work = Work(run: body, name: name)
        let context = Unmanaged.passRetained(work).toOpaque()
        var thread = pthread_t()
        guard pthread_create(&thread, nil, dedicatedThreadMain, context) == 0 else {
            Unmanaged<Work>.fromOpaque(context).release()
            DispatchQueue.global().async { work.run() }
            return
        }
        pthread_detach(thread)
    }

    final class Work: Sendable {
        let run: @Sendable () -> Void
        let name: String

        init(run: @escaping @Sendable () -> Void, name: String) {
            self.run = run
            self.name = name
        }
    }

    /// Names the calling thread as `ps -L` and `top -H` show it, through
    /// `/proc/thread-self/comm` (glibc's `pthread_setname_np` is not visible to Swift).
    public static func nameCurrentThread(_ name: String) {
        let file = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard file >= 0 else { return }
        let bytes = Array(name.utf8.prefix(15))
        _ = bytes.withUnsafeBytes { write(file, $0.baseAddress, $0.count) }
        close(file)
    }
}

/// The new thread's entry point: takes over the reference `DedicatedThread.start` retained for it.
private func dedicatedThreadMain(_ context: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    guard let context else { return nil }
    let work = Unmanaged<DedicatedThread.Work>.fromOpaque(context).takeRetainedValue()
    DedicatedThread.nameCurrentThread(work.name)
    work.run()
    return nil
}
