import Logging
import TandemCache
import TandemTransport
import TandemLoop

#if canImport(Glibc)
import Glibc
#endif

/// One connection to one memcached server, driven by an event loop and speaking the meta protocol.
///
/// Requests submitted in one loop turn go out in one write; replies are matched in order. A request
/// may take several replies (a quiet batch ends with `MN`): its handler says when it is complete.
/// When the oldest request outlives the command timeout, or the connection breaks, everything in
/// flight on it fails with a typed error (``CacheError/timeout(operation:server:)`` or
/// ``CacheError/connectionFailed(server:reason:)``), the failure is reported (so that the server can
/// be set aside), and the next request reconnects, with a short backoff after failed attempts.
final class MemcachedLoopConnection: LoopSocketDelegate, @unchecked Sendable {
    // Why @unchecked Sendable is safe: every mutable field below is only touched on `loop`'s thread,
    // except `incoming`, which locks. `send` and `close` are documented as loop-thread only and
    // callers hop there first (``MemcachedLoopClient`` does, with `withLoopPromise` or `execute`);
    // `submit`, from any thread, only queues under `incoming`'s lock and schedules the drain job.

    /// Called with a reply (or once with the failure that ended the request); returns true when the
    /// request has all its replies.
    typealias Handler = (Result<MetaReply, CacheError>) -> Bool

    let loop: any TandemEventLoop
    let name: String
    let commandTimeout: UInt64
    /// Called on the loop thread when the connection fails (not when it is closed on purpose).
    var onFailure: ((CacheError) -> Void)?
    private let logger = Logger(label: "tandem.memcached")
    private let socket: LoopSocket

    private typealias State = LoopConnectionState
    /// Where a request's replies go: the promise of the task waiting for its one reply (no closure
    /// per request), or a handler (a quiet batch of several replies).
    private enum Waiter {
        case reply(LoopPromise<MetaReply>)
        case handler(Handler)

        /// Hands over a reply; true when the request has all its replies.
        func take(_ reply: MetaReply) -> Bool {
            switch self {
            case .reply(let p): p.succeed(reply); return true
            case .handler(let h): return h(.success(reply))
            }
        }

        func fail(_ error: CacheError) {
            switch self {
            case .reply(let p): p.fail(error)
            case .handler(let h): _ = h(.failure(error))
            }
        }
    }
    private struct Pending {
        let deadline: UInt64
        let waiter: Waiter
    }
    /// A one-reply request from another thread, waiting for the loop.
    private struct Queued: LoopQueueItem {
        let request: [UInt8]
        let promise: LoopPromise<MetaReply>
        var isAbandoned: Bool { promise.isCompleted }
        func fail(_ error: any Error) { promise.fail(error) }
    }

    private var state = State.idle
    private var decoder = MetaDecoder()
    private var pending: [Pending] = []
    private var head = 0
    private var timeoutTimer: TimerID?
    private var failures = 0
    private var hookID: ShutdownHookID?
    /// One-reply requests queued by other threads; one loop job sends all of them.
    private let incoming = LoopQueue<Queued>()

    /// This server's async-face connection metrics (nil: not measured).
    private let metrics: ConnectionMetrics?
    /// When the connection in progress started (for `db.client.connection.create_time`).
    private var connectStart: UInt64 = 0

    init(loop: any TandemEventLoop, address: ServerAddress, name: String, commandTimeout: Double, connectTimeout: Double,
         metrics: ConnectionMetrics? = nil) {
        self.loop = loop
        self.metrics = metrics
        self.name = name
        self.commandTimeout = UInt64(commandTimeout * 1e9)
        socket = LoopSocket(loop: loop, address: address, name: name, protocolName: "memcached", connectTimeout: connectTimeout)
        socket.delegate = self
    }

    // MARK: any thread

    /// Sends `request`, one meta-protocol command with one reply, which completes `promise`: at once
    /// on the loop thread, otherwise through the queue that the loop's next drain sends (the first
    /// request queued since the last drain schedules it). Fails the promise with
    /// ``TandemError/loopShutDown(loop:)`` when the loop is gone.
    func submit(_ request: [UInt8], _ promise: LoopPromise<MetaReply>) {
        if loop.inEventLoop {
            send(request, .reply(promise))
            return
        }
        incoming.add(Queued(request: request, promise: promise)) {
            try loop.execute { [self] in incoming.drain { send($0.request, .reply($0.promise)) } }
        }
    }

    // MARK: loop thread

    /// Queues `request` (whole meta-protocol commands) with its reply handler. Loop thread only.
    func send(_ request: [UInt8], _ handler: @escaping Handler) {
        send(request, .handler(handler))
    }

    private func send(_ request: [UInt8], _ waiter: Waiter) {
        if hookID == nil, !isClosed {
            hookID = loop.onShutdown { [self] in loopShuttingDown() }
        }
        if case .backoff(let until, let reason) = state {
            if monotonicNanos() < until {
                waiter.fail(.connectionFailed(server: name, reason: "reconnecting after: \(reason)"))
                return
            }
            state = .idle
        }
        if case .closed = state {
            waiter.fail(.shutDown("the event loop of memcached \(name)"))
            return
        }
        if case .idle = state {
            state = .connecting
            if metrics != nil { connectStart = monotonicNanos() }
            decoder.reset()
            socket.connect()
            if case .backoff(_, let reason) = state {
                waiter.fail(.connectionFailed(server: name, reason: reason))
                return
            }
        }
        socket.write(request)
        pending.append(Pending(deadline: monotonicNanos() &+ commandTimeout, waiter: waiter))
        metrics?.pending?.increment()
        armTimeout()
    }

    /// Closes the connection: pending requests fail with a `connectionFailed` "closed" error and the
    /// next request reconnects. Loop thread only.
    func close() {
        drop(.connectionFailed(server: name, reason: "closed"), next: .idle, report: false)
        if let id = hookID {
            loop.removeShutdownHook(id)
            hookID = nil
        }
    }

    private var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    private func loopShuttingDown() {
        hookID = nil
        drop(.shutDown("the event loop of memcached \(name)"), next: .idle, report: false)
        state = .closed
    }

    // MARK: LoopSocketDelegate

    func socketConnected() {
        state = .ready
        failures = 0
        metrics?.connected(since: connectStart)
    }

    func socketReceived(_ bytes: UnsafeRawBufferPointer) {
        decoder.feed(bytes)
    }

    func socketReadDone() {
        while case .ready = state {
            let reply: MetaReply?
            do {
                reply = try decoder.next()
            } catch {
                drop(.connectionFailed(server: name, reason: "protocol error: \(error.reason)"), next: .idle)
                return
            }
            guard let reply else { break }
            guard head < pending.count else {
                drop(.connectionFailed(server: name, reason: "a reply without a request"), next: .idle)
                return
            }
            if pending[head].waiter.take(reply) {
                head += 1
                metrics?.pending?.decrement()
            }
        }
        if head == pending.count {
            pending.removeAll(keepingCapacity: pending.count < 4096)
            head = 0
        } else if head > 1024 && head * 2 > pending.count {
            pending.removeFirst(head)
            head = 0
        }
    }

    func socketFailed(_ error: CacheError, connecting: Bool) {
        drop(error, next: connecting ? .backoff : .idle)
    }

    // MARK: timeouts and failures

    private func armTimeout() {
        guard timeoutTimer == nil, head < pending.count else { return }
        let delay = pending[head].deadline &- min(pending[head].deadline, monotonicNanos())
        timeoutTimer = loop.schedule(after: .nanoseconds(Int64(delay))) { [self] in
            timeoutTimer = nil
            expire()
        }
    }

    /// The oldest request is past its deadline: the server is stalled (or the reply is stuck half
    /// written), and everything behind it on this connection waits on it. Every request in flight
    /// fails with a timeout, the connection is dropped (the server is set aside, as libmemcached does
    /// after a timeout), and later requests reconnect.
    private func expire() {
        guard head < pending.count else { return }
        if pending[head].deadline <= monotonicNanos() {
            drop(.timeout(operation: "memcached command", server: name), next: .idle)
        } else {
            armTimeout()
        }
    }

    private enum Next { case idle, backoff }

    private func drop(_ error: CacheError, next: Next, report: Bool = true) {
        let wasConnecting: Bool
        if case .connecting = state { wasConnecting = true } else { wasConnecting = false }
        if let metrics {
            if case .ready = state { metrics.used.decrement() }
            if report, !isClosed { metrics.failed(error) }
        }
        socket.close()
        decoder.reset()
        let victims = pending[head...]
        if !victims.isEmpty { metrics?.pending?.decrement(by: Double(victims.count)) }
        pending = []
        head = 0
        if let t = timeoutTimer { loop.cancel(t); timeoutTimer = nil }
        if next == .backoff || wasConnecting {
            failures += 1
            let ms = ReconnectBackoff.milliseconds(afterFailures: failures)
            state = .backoff(until: monotonicNanos() &+ UInt64(ms) * 1_000_000, reason: "\(error)")
            logger.warning("memcached connection failed; backing off", metadata: ["server": "\(name)", "retry_ms": "\(ms)", "reason": "\(error)"])
        } else if !isClosed {
            state = .idle
        }
        for v in victims { v.waiter.fail(error) }
        if report { onFailure?(error) }
    }
}
