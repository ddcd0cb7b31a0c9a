import NIOCore

/// Runs the jobs of the tasks that prefer it (SE-0417, `withTaskExecutorPreference`) on one NIO
/// event loop, so that a connection's request handling stays on the thread that reads and
/// writes its socket.
///
/// Without a preference, every request crosses threads four times: the event loop hands the
/// request to Swift's cooperative pool, the handler's answer goes back to the event loop, and a
/// hub round trip resumes the handler on the pool before that. With it, the handler runs on the
/// event loop (reading the request and writing the answer need no hand-off), and a round trip
/// that completes on the MQTT network thread resumes the handler directly on the event loop.
///
/// Only code that never blocks may run this way: blocking work (disk syncs, libcurl) runs on
/// threads of its own and is awaited, which suspends the handler rather than the event loop.
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}
