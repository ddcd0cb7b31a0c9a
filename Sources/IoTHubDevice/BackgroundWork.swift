import NIOConcurrencyHelpers

/// The work a client does on its own — connection attempts, the timers of the reconnect and
/// the credential renewal, subscribing after a connect — as the children of one task group in
/// one task per client. The task starts with the first job (a client that is never used starts
/// none); ``cancelAndWait()`` (at shutdown) cancels every job and returns once all have ended.
///
/// A job that must not keep the client alive (the timers, which wait for a long time) captures
/// it weakly; the others hold it for as long as they run, as any call on the client does.
final class BackgroundWork: Sendable {
    /// Concurrent: each runs as a child task of its own, not on the caller's executor.
    typealias Job = @Sendable @concurrent () async -> Void

    private struct State {
        var jobs: AsyncStream<Job>.Continuation?
        var task: Task<Void, Never>?
        /// The job that runs as long as the others can (the timers), started with the task.
        var resident: Job?
        var isCancelled = false
    }

    private let state = NIOLockedValueBox(State())

    /// Sets the job that runs for as long as the task, from its start (the timers).
    func setResident(_ job: @escaping Job) {
        state.withLockedValue { $0.resident = job }
    }

    /// Starts the task (with the resident job) if it has not started yet.
    func start() {
        _ = jobs()
    }

    /// Runs `job` as a child of the client's task. False (and `job` never runs) once the work
    /// has been cancelled.
    @discardableResult
    func run(_ job: @escaping Job) -> Bool {
        guard let jobs = jobs() else { return false }
        if case .terminated = jobs.yield(job) { return false }
        return true
    }

    /// Cancels every job and waits until they have all ended; later jobs do not run.
    func cancelAndWait() async {
        await cancel()?.value
    }

    /// Cancels every job without waiting (a client going away); later jobs do not run.
    @discardableResult
    func cancel() -> Task<Void, Never>? {
        let (jobs, task) = state.withLockedValue { state in
            state.isCancelled = true
            defer { state.jobs = nil }
            return (state.jobs, state.task)
        }
        jobs?.finish()
        task?.cancel()
        return task
    }

    private func jobs() -> AsyncStream<Job>.Continuation? {
        state.withLockedValue { state in
            guard !state.isCancelled else { return nil }
            if let jobs = state.jobs { return jobs }
            let (stream, jobs) = AsyncStream.makeStream(of: Job.self)
            let resident = state.resident
            state.jobs = jobs
            state.task = Task {
                await withDiscardingTaskGroup { group in
                    if let resident { group.addTask(operation: resident) }
                    for await job in stream {
                        group.addTask(operation: job)
                    }
                    // The stream ends when the work is cancelled: so are the jobs still running.
                    group.cancelAll()
                }
            }
            return jobs
        }
    }
}
