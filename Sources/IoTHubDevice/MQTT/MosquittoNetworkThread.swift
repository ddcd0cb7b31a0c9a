import AsyncPrimitives
internal import CMosquitto
internal import COpenSSL
import Dispatch
import Glibc
import IoTHubProtocol
import Synchronization

/// The network thread of one libmosquitto connection, run by the client instead of
/// `mosquitto_loop_start`.
///
/// libmosquitto's own thread wakes once per queued packet: every publish writes one byte to an
/// internal socket pair, and each turn of its loop reads one byte back and waits in `select`
/// again, so a batch of 100 messages costs 200 extra system calls on top of the writes. It also
/// reads each TLS record with two `read`s. This thread instead
/// - is woken through a pipe at most once per burst: whoever hands libmosquitto packets
///   calls `wake()`, and only the first call before the thread runs again writes to it;
/// - reads with OpenSSL's read-ahead (set on the `SSL_CTX` by `TLSContext`), so one `read`
///   takes every record that has arrived, and keeps reading while OpenSSL still holds a
///   complete record (`SSL_has_pending`), which `select`/`poll` cannot see;
/// - writes everything queued in one pass with the TCP socket corked (few segments instead of
///   one per packet), then runs libmosquitto's keep-alive check.
///
/// libmosquitto is told it is driven by an external thread (`mosquitto_threaded_set`), so no
/// publishing thread ever writes to the socket itself. The thread ends when the connection
/// ends (libmosquitto has closed the socket and called the disconnect callback) or when
/// `stop()` asks it to.
///
/// `Sendable` as the compiler checks it: the handle is a ``MosquittoHandle`` (used here only
/// through libmosquitto's loop functions, the ones its own thread calls); `stopRequested` and
/// `wakePending` are atomics; the pipe's descriptors are constants, written from any thread
/// (the kernel serialises writes) and closed in `deinit`, after the thread has finished.
final class MosquittoNetworkThread: Sendable {
    private let mosquitto: MosquittoHandle
    private var handle: OpaquePointer { mosquitto.pointer }
    /// The pipe that wakes the thread: it polls the read end, `wake()` writes to the other.
    private let wakeDescriptor: Int32
    private let wakeWriteDescriptor: Int32
    private let wakePending = Atomic<Bool>(false)
    private let stopRequested = Atomic<Bool>(false)
    /// The thread's `pthread_t`, so that `stop()` called from a callback does not wait for itself.
    private let runningThread = Atomic<UInt>(0)
    private let finished = DispatchSemaphore(value: 0)
    /// The longest the thread sleeps without a wake-up: libmosquitto's keep-alive check (PINGREQ,
    /// a missing PINGRESP) runs at least this often.
    private static let pollTimeoutMilliseconds: Int32 = 1000
    /// Told, on the thread, why the connection ended when the thread ends with it (not after
    /// `stop()`): libmosquitto's code of the call that failed (`MOSQ_ERR_SUCCESS` if none did).
    private let onConnectionEnded: @Sendable (Int32) -> Void

    /// Starts the thread for `handle`, which must be connected (`mosquitto_connect` or
    /// `mosquitto_reconnect` returned success). `onConnectionEnded` hears when the connection
    /// ends: libmosquitto calls its disconnect callback for most endings, but not when the TLS
    /// handshake fails (it only closes the socket).
    /// Called on the thread before it writes, with what the reads before it received handed on:
    /// the place to make received messages durable before their acknowledgements leave (the
    /// acknowledgements are only queued until then). Returning false ends the connection
    /// without writing: the hub sends the unacknowledged messages again.
    private let beforeWrite: @Sendable () -> Bool

    init(
        handle: MosquittoHandle, beforeWrite: @escaping @Sendable () -> Bool = { true },
        onConnectionEnded: @escaping @Sendable (Int32) -> Void
    ) throws(IoTHubError) {
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else {
            throw .clientError(
                "cannot create the MQTT network thread's wake-up pipe: \(String(cString: strerror(errno)))")
        }
        for end in ends {
            _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
        }
        self.mosquitto = handle
        self.onConnectionEnded = onConnectionEnded
        self.beforeWrite = beforeWrite
        self.wakeDescriptor = ends[0]
        self.wakeWriteDescriptor = ends[1]
        DedicatedThread.start(name: "iothub-mqtt") { [self] in
            run()
            finished.signal()
        }
    }

    deinit {
        close(wakeDescriptor)
        close(wakeWriteDescriptor)
    }

    /// Makes the thread write what has been queued. Call after handing libmosquitto packets
    /// (publish, subscribe, disconnect); cheap when a wake-up is already on its way.
    func wake() {
        guard !wakePending.exchange(true, ordering: .acquiringAndReleasing) else { return }
        var byte: UInt8 = 1
        _ = Glibc.write(wakeWriteDescriptor, &byte, 1)
    }

    /// Asks the thread to end and waits until it has (at most one poll turn); called on the
    /// thread itself (from a callback), it only asks. Any number of calls may wait.
    func stop() {
        stopRequested.store(true, ordering: .releasing)
        var byte: UInt8 = 1
        _ = Glibc.write(wakeWriteDescriptor, &byte, 1)
        guard pthread_equal(pthread_self(), runningThread.load(ordering: .acquiring)) == 0 else { return }
        finished.wait()
        // Passed on, so that the next caller does not wait for a thread that has ended.
        finished.signal()
    }

    private func run() {
        runningThread.store(pthread_self(), ordering: .releasing)
        var descriptors = [
            pollfd(fd: -1, events: 0, revents: 0),
            pollfd(fd: wakeDescriptor, events: Int16(POLLIN), revents: 0),
        ]
        // The tunnel hands libmosquitto a unix socket, which has no segments to hold back.
        let corks = Self.isTCP(mosquitto_socket(handle))
        var failure = MOSQ_ERR_SUCCESS.rawValue
        while !stopRequested.load(ordering: .acquiring) {
            let socket = mosquitto_socket(handle)
            guard socket >= 0 else {
                onConnectionEnded(failure)
                return
            }
            descriptors[0] = pollfd(
                fd: socket, events: Int16(POLLIN) | (mosquitto_want_write(handle) ? Int16(POLLOUT) : 0), revents: 0)
            descriptors[1].revents = 0
            if poll(&descriptors, 2, Self.pollTimeoutMilliseconds) < 0 {
                guard errno != EINTR else { continue }
                // The thread cannot wait on the socket any more (not seen happen): end the
                // connection, so the client sees a drop and reconnects instead of keeping a
                // connection nobody serves. libmosquitto reports it on the next read.
                _ = Glibc.shutdown(socket, Int32(SHUT_RDWR))
                failure = readAvailable()
                continue
            }
            if descriptors[1].revents != 0 {
                // Wake-ups are coalesced, so a few bytes at most are waiting.
                var bytes: (UInt64, UInt64) = (0, 0)
                _ = Glibc.read(wakeDescriptor, &bytes, MemoryLayout.size(ofValue: bytes))
                // Cleared before writing: a packet queued from now on sends its own wake-up.
                wakePending.store(false, ordering: .releasing)
            }
            if descriptors[0].revents != 0 {
                failure = readAvailable()
                guard failure == MOSQ_ERR_SUCCESS.rawValue else { continue }
            }
            // PUBACKs for what was just read are queued, not written (threaded mode): what
            // needs keeping is kept first (docs/ARCHITECTURE.md, "Store and forward").
            guard beforeWrite() else {
                _ = Glibc.shutdown(socket, Int32(SHUT_RDWR))
                failure = readAvailable()
                continue
            }
            if mosquitto_want_write(handle) {
                // Everything queued goes out as few TCP segments as possible: libmosquitto writes
                // each packet (one TLS record each) with its own send.
                if corks { setCork(socket, true) }
                // libmosquitto tests `errno` for EAGAIN after a call that may not have touched it.
                errno = 0
                failure = mosquitto_loop_write(handle, 1)
                if corks { setCork(socket, false) }
                guard failure == MOSQ_ERR_SUCCESS.rawValue else { continue }
            }
            failure = mosquitto_loop_misc(handle)
        }
    }

    private static func isTCP(_ socket: Int32) -> Bool {
        var domain: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(socket, SOL_SOCKET, SO_DOMAIN, &domain, &length) == 0 else { return false }
        return domain == AF_INET || domain == AF_INET6
    }

    /// Holds back (or releases) partial TCP segments.
    private func setCork(_ socket: Int32, _ on: Bool) {
        var value: Int32 = on ? 1 : 0
        _ = setsockopt(socket, Int32(IPPROTO_TCP), TCP_CORK, &value, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Reads every packet that has arrived; libmosquitto's code of a failure (the connection
    /// ended: libmosquitto has closed the socket), else `MOSQ_ERR_SUCCESS`.
    private func readAvailable() -> Int32 {
        repeat {
            // libmosquitto tests `errno` for EAGAIN after calls that may not have touched it.
            errno = 0
            let code = mosquitto_loop_read(handle, 1)
            guard code == MOSQ_ERR_SUCCESS.rawValue else { return code }
        } while holdsUnreadRecord()
        return MOSQ_ERR_SUCCESS.rawValue
    }

    /// Whether OpenSSL holds a received record not handed out yet (read-ahead took more than
    /// one off the socket; libmosquitto reads a bounded number of packets per call). Not when
    /// its last read wanted more bytes from the socket: then it holds at most the start of a
    /// record, and `poll` reports the rest when it arrives (reading again now would spin).
    private func holdsUnreadRecord() -> Bool {
        guard let ssl = mosquitto_ssl_get(handle).map(OpaquePointer.init) else { return false }
        return SSL_want(ssl) != SSL_READING && SSL_has_pending(ssl) == 1
    }
}
