import Logging
import TandemCache
import TandemTransport
import TandemLoop

/// One Redis connection driven by an event loop: the loop does the socket I/O, hiredis's reply reader
/// parses, ``RESP`` writes the commands into the socket's buffer.
///
/// Everything submitted in one loop turn goes out in one write (auto-pipelining). Commands from other
/// threads wait in a queue that one loop job drains, with the waiting task's promise (no closure, no
/// inbox entry per command). Replies come back in order. A command that outlives its timeout fails with ``CacheError/timeout(operation:server:)``
/// and its late reply is dropped; a broken connection fails every pending command with a typed error
/// and the next command reconnects (with backoff after failed attempts).
final class RedisAsyncConnection: LoopSocketDelegate, @unchecked Sendable {
    // Why @unchecked Sendable is safe: every mutable field below is only touched on `loop`'s thread,
    // except `incoming`, which locks. The only entry points from other threads are `command` (which
    // only queues under that lock and schedules the drain with `execute`), `pipeline` and `shutdown`
    // (which hop to the loop with `withLoopPromise` / `execute` before touching anything).

    let loop: any TandemEventLoop
    let target: RedisTarget
    var endpoint: RedisEndpoint { target.endpoint }
    let commandTimeout: UInt64
    let connectTimeout: UInt64
    private let logger = Logger(label: "tandem.redis")

    private typealias State = LoopConnectionState
    /// Where a command's reply goes: the promise of the task that sent it (no closure per command),
    /// or a closure (the handshake's commands, the parts of a pipeline).
    private enum Waiter {
        case promise(LoopPromise<RedisValue>)
        case callback((Result<RedisValue, CacheError>) -> Void)

        func finish(_ result: Result<RedisValue, CacheError>) {
            switch self {
            case .promise(let p):
                switch result {
                case .success(let v): p.succeed(v)
                case .failure(let e): p.fail(e)
                }
            case .callback(let f): f(result)
            }
        }
    }
    private struct Pending {
        let deadline: UInt64
        let waiter: Waiter
    }
    /// A command sent from another thread, waiting for the loop.
    private struct Queued: LoopQueueItem {
        let args: [[UInt8]]
        let promise: LoopPromise<RedisValue>
        var isAbandoned: Bool { promise.isCompleted }
        func fail(_ error: any Error) { promise.fail(error) }
    }

    private var state = State.idle
    /// Set while a connection to a sentinel-named primary waits for its handshake's `ROLE` to say it
    /// is the primary: commands sent meanwhile wait in ``held`` instead of going out with the
    /// handshake, so that no write reaches a node that has just been demoted.
    private var confirming = false
    private var held: [(args: [[UInt8]], waiter: Waiter)] = []
    private let socket: LoopSocket
    private var reader: RedisReplyReader?
    private var pending: [Pending] = []
    private var head = 0
    /// Pending entries before this index have already been failed by the timeout timer.
    private var expiredUpTo = 0
    private var timeoutTimer: TimerID?
    private var failures = 0
    /// The sentinels' failover epoch when this connection was made (see ``RedisSentinel/epoch``).
    private var epoch: UInt64 = 0
    /// For a Sentinel replica reader: whether it fell back to the primary, and when to leave it.
    private var placement = ReplicaPlacement()
    /// The reader should leave the primary as soon as nothing is in flight.
    private var moveWanted = false
    /// This connection's shutdown hook on the loop (it holds the connection until removed).
    private var hookID: ShutdownHookID?
    /// Commands queued by other threads; one loop job sends all of them.
    private let incoming = LoopQueue<Queued>()

    /// Told (on the loop) whenever an open connection closes: the server forgets what it was tracking
    /// for it (see ``NearCache``).
    private let onConnectionLost: (@Sendable () -> Void)?

    /// This node's async-face connection metrics (nil: not measured).
    private let metrics: ConnectionMetrics?
    /// When the connection in progress started (for `db.client.connection.create_time`).
    private var connectStart: UInt64 = 0

    init(loop: any TandemEventLoop, target: RedisTarget, tls: TLSClientContext?, commandTimeout: Double, connectTimeout: Double,
         metrics: ConnectionMetrics? = nil, onConnectionLost: (@Sendable () -> Void)? = nil) {
        self.onConnectionLost = onConnectionLost
        self.metrics = metrics
        self.loop = loop
        self.target = target
        let endpoint = target.endpoint
        self.commandTimeout = UInt64(commandTimeout * 1e9)
        self.connectTimeout = UInt64(connectTimeout * 1e9)
        if target.followsFailover {
            socket = LoopSocket(loop: loop, name: endpoint.description, protocolName: "redis", connectTimeout: connectTimeout, tls: tls) {
                () throws(CacheError) in try target.find()
            }
        } else {
            socket = LoopSocket(loop: loop, address: endpoint.address, name: endpoint.description, protocolName: "redis", connectTimeout: connectTimeout,
                                tls: tls, tlsHost: endpoint.tlsHost)
        }
        socket.delegate = self
    }

    // MARK: from any thread

    /// Sends one command and waits for its reply without blocking a thread.
    ///
    /// - Parameter idempotent: when the connection fails under the command (the server closed it: a
    ///   restart, `CLIENT KILL`, an idle timeout the loop had not seen yet), send it once more, on the
    ///   connection made anew: what the blocking face does for the same commands. A server that is
    ///   down fails the second attempt at once (the connection is backing off). The retry is a loop
    ///   around one suspension point rather than a wrapper function: every async frame on this path
    ///   stays allocated in the caller's task while the command is in flight. For the same reason it
    ///   is inlined into its callers and maps errors out of line (``retryAfter(_:allowed:)``), which
    ///   keeps this frame small: a GET's whole path fits in the first slab of the caller's task.
    @inline(__always)
    func command(_ args: [[UInt8]], idempotent: Bool = false) async throws -> RedisValue {
        var again = idempotent
        while true {
            do {
                return try await withPromise(waiterLoop: loop) { (p: LoopPromise<RedisValue>) in
                    submit(args, p)
                }
            } catch {
                try retryAfter(error, allowed: again)
                again = false
            }
        }
    }

    /// Hands a command to the loop: sent at once on the loop thread, otherwise queued for the loop's
    /// next drain (the first command queued since the last drain schedules it).
    @inline(never)
    private func submit(_ args: [[UInt8]], _ promise: LoopPromise<RedisValue>) {
        if loop.inEventLoop {
            send(args, .promise(promise))
            return
        }
        incoming.add(Queued(args: args, promise: promise)) {
            try loop.execute { [self] in incoming.drain { send($0.args, .promise($0.promise)) } }
        }
    }

    /// Returns when a command that failed with `error` is to be sent once more (`allowed`: it is
    /// idempotent and was not retried yet, and the connection failed under it); otherwise throws the
    /// error the caller sees. Out of line, so that the error handling takes no room in the frames of
    /// the async callers, which stay allocated while their command is in flight.
    @inline(never)
    private func retryAfter(_ error: any Error, allowed: Bool) throws {
        if allowed, (error as? CacheError)?.code == .connectionFailed { return }
        if (error as? TandemError)?.code == .loopShutDown { throw CacheError.shutDown("the event loop of \(endpoint.description)") }
        throw error
    }

    /// Sends several commands in one write and waits for all their replies (`idempotent`: as for
    /// ``command(_:idempotent:)``, the whole pipeline once more).
    func pipeline(_ commands: [[[UInt8]]], idempotent: Bool = false) async throws -> [RedisValue] {
        if commands.isEmpty { return [] }
        var again = idempotent
        while true {
            do {
                return try await pipelineOnLoop(commands)
            } catch let e as CacheError where e.code == .connectionFailed && again {
                again = false
            } catch let error as TandemError where error.code == .loopShutDown {
                throw CacheError.shutDown("the event loop of \(endpoint.description)")
            }
        }
    }

    /// Sends several commands in one write from blocking code and waits for all their replies on the
    /// calling thread (which must not be this connection's loop thread), for at most the command
    /// timeout plus the connect timeout: the connection fails them itself by then.
    func pipelineWaiting(_ commands: [[[UInt8]]]) throws -> [RedisValue] {
        let done = BlockingWait<[RedisValue]>()
        do {
            try loop.execute { [self] in
                var results = [RedisValue](repeating: .null, count: commands.count)
                var remaining = commands.count
                for (i, c) in commands.enumerated() {
                    send(c, .callback { r in
                        switch r {
                        case .success(let v):
                            results[i] = v
                            remaining -= 1
                            if remaining == 0 { done.finish(.success(results)) }
                        case .failure(let e):
                            done.finish(.failure(e))
                        }
                    })
                }
            }
        } catch {
            throw CacheError.shutDown("the event loop of \(endpoint.description)")
        }
        let limit = Double(commandTimeout + connectTimeout) / 1e9 + 1
        guard let result = done.wait(seconds: limit) else {
            throw CacheError.timeout(operation: "redis command", server: endpoint.description)
        }
        return try result.get()
    }

    private func pipelineOnLoop(_ commands: [[[UInt8]]]) async throws -> [RedisValue] {
        try await withLoopPromise(on: loop) { (p: LoopPromise<[RedisValue]>) in
            var results = [RedisValue](repeating: .null, count: commands.count)
            var remaining = commands.count
            for (i, c) in commands.enumerated() {
                self.send(c, .callback { r in
                    switch r {
                    case .success(let v):
                        results[i] = v
                        remaining -= 1
                        if remaining == 0 { p.succeed(results) }
                    case .failure(let e):
                        p.fail(e)
                    }
                })
            }
        }
    }

    /// Closes the connection (on the loop): pending commands fail with a `connectionFailed` "closed"
    /// error, the shutdown hook lets go of the connection, and the next command reconnects.
    func shutdown() {
        let work: @Sendable () -> Void = {
            self.drop(CacheError.connectionFailed(server: self.endpoint.description, reason: "closed"), next: .idle)
            if let id = self.hookID {
                self.loop.removeShutdownHook(id)
                self.hookID = nil
            }
        }
        if loop.inEventLoop { work() } else { try? loop.execute(work) }
    }

    // MARK: loop thread

    private func send(_ args: [[UInt8]], _ done: Waiter) {
        if hookID == nil, !isClosed {
            hookID = loop.onShutdown { [self] in loopShuttingDown() }
        }
        if case .backoff(let until, let reason) = state {
            if monotonicNanos() < until {
                done.finish(.failure(.connectionFailed(server: endpoint.description, reason: "reconnecting after: \(reason)")))
                return
            }
            state = .idle
        }
        if case .closed = state {
            done.finish(.failure(.shutDown("the event loop of \(endpoint.description)")))
            return
        }
        if let sentinel = target.sentinel, epoch != sentinel.epoch, !isIdle {
            // The sentinels announced a failover since this connection was made: it may still reach
            // the old primary, whose writes are lost. Reconnect (asking the sentinels) first.
            drop(.connectionFailed(server: endpoint.description, reason: "the sentinels announced a new primary"), next: .idle)
        }
        if target.readsReplica, let sentinel = target.sentinel, case .ready = state, placement.shouldMove(sentinel) {
            moveWanted = true
            leaveIfQuiet()
        }
        if case .idle = state {
            startConnect()
            if case .backoff(_, let reason) = state {
                done.finish(.failure(.connectionFailed(server: endpoint.description, reason: reason)))
                return
            }
        }
        if confirming {
            held.append((args, done))
            return
        }
        append(args, done)
    }

    private func append(_ args: [[UInt8]], _ done: Waiter) {
        socket.write { RESP.append(args, to: &$0) }
        pending.append(Pending(deadline: monotonicNanos() &+ commandTimeout, waiter: done))
        metrics?.pending?.increment()
        armTimeout()
    }

    /// Starts a connection (the socket looks the host up off the loop thread when it is a name and
    /// tries every address within the connect timeout); the handshake is queued first.
    private func startConnect() {
        state = .connecting
        if metrics != nil { connectStart = monotonicNanos() }
        epoch = target.sentinel?.epoch ?? 0
        if let sentinel = target.sentinel { placement.connecting(sentinel) }
        moveWanted = false
        reader = RedisReplyReader()
        socket.connect()
        guard case .connecting = state else { return }  // failed at once
        for command in target.handshake {
            // A primary that follows the sentinels is confirmed by ROLE before anything else is sent.
            let confirms = command[0] == "ROLE".bytes && !target.readsReplica
            if confirms { confirming = true }
            append(command, .callback { [self] r in
                guard case .success(let reply) = r else {
                    // Unconfirmed (a timeout, or a drop that already failed what was held): start over.
                    if case .failure(let e) = r, confirms, confirming { drop(e, next: .idle) }
                    return
                }
                if target.readsReplica, command[0] == "ROLE".bytes { placement.learned(role: reply) }
                if let e = target.refusal(of: command, reply: reply) {
                    logger.error("redis handshake failed", metadata: ["server": "\(endpoint.description)", "error": "\(e)"])
                    drop(e, next: .backoff)
                    return
                }
                if confirms { releaseHeld() }
            })
        }
    }

    /// ROLE said primary: the commands that waited go out, in the order they were sent.
    private func releaseHeld() {
        confirming = false
        let waiting = held
        held = []
        for h in waiting {
            if case .promise(let p) = h.waiter, p.isCompleted { continue }  // its task was cancelled meanwhile
            append(h.args, h.waiter)
        }
    }

    // MARK: LoopSocketDelegate

    func socketConnected() {
        state = .ready
        failures = 0
        metrics?.connected(since: connectStart)
    }

    func socketReceived(_ bytes: UnsafeRawBufferPointer) {
        guard let reader else { return }
        if !reader.feed(bytes) {
            drop(.connectionFailed(server: endpoint.description, reason: "protocol error"), next: .idle)
        }
    }

    func socketReadDone() { drainReplies() }

    func socketFailed(_ error: CacheError, connecting: Bool) {
        drop(error, next: connecting ? .backoff : .idle)
    }

    /// The loop is shutting down: fail everything pending and refuse what comes later.
    private func loopShuttingDown() {
        hookID = nil
        drop(.shutDown("the event loop of \(endpoint.description)"), next: .idle)
        state = .closed
    }

    private var isIdle: Bool {
        if case .idle = state { return true }
        return false
    }

    private var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    private func drainReplies() {
        guard let reader else { return }
        replies: while case .ready = state {
            let value: RedisValue
            switch reader.next() {
            case .reply(let v): value = v
            case .incomplete: break replies
            case .protocolError:
                drop(.connectionFailed(server: endpoint.description, reason: "protocol error"), next: .idle)
                return
            }
            guard head < pending.count else {
                drop(.connectionFailed(server: endpoint.description, reason: "reply without a command"), next: .idle)
                return
            }
            let p = pending[head]
            head += 1
            metrics?.pending?.decrement()
            // A command that already timed out (or whose task was cancelled) was completed with an
            // error; its promise ignores this late reply.
            p.waiter.finish(.success(value))
            if target.followsFailover && RedisTarget.isReadOnly(value) {
                // The primary became a replica (a failover): reconnect, which asks the sentinels.
                drop(.connectionFailed(server: endpoint.description, reason: "the server became a replica (READONLY): reconnecting to the new primary"), next: .idle)
                return
            }
        }
        if head == pending.count {
            pending.removeAll(keepingCapacity: pending.count < 4096)
            head = 0
            expiredUpTo = 0
            if moveWanted { leaveIfQuiet() }
        } else if head > 1024 && head * 2 > pending.count {
            pending.removeFirst(head)
            expiredUpTo = max(0, expiredUpTo - head)
            head = 0
        }
    }

    private func armTimeout() {
        guard timeoutTimer == nil else { return }
        let first = max(head, expiredUpTo)
        guard first < pending.count else { return }
        let delay = pending[first].deadline &- min(pending[first].deadline, monotonicNanos())
        timeoutTimer = loop.schedule(after: .nanoseconds(Int64(delay))) { [self] in
            timeoutTimer = nil
            expire()
        }
    }

    private func expire() {
        let now = monotonicNanos()
        var i = max(head, expiredUpTo)
        var victims: [Pending] = []
        while i < pending.count, pending[i].deadline <= now {
            victims.append(pending[i])
            i += 1
        }
        expiredUpTo = i
        for v in victims { v.waiter.finish(.failure(.timeout(operation: "redis command", server: endpoint.description))) }
        // The oldest command has waited three timeouts: the connection is stuck, not just slow.
        if head < pending.count, now &- (pending[head].deadline &- commandTimeout) > max(3 * commandTimeout, commandTimeout + 1_000_000_000) {
            drop(.timeout(operation: "redis command", server: endpoint.description), next: .idle)
            return
        }
        armTimeout()
    }

    /// A replica reader on the primary leaves it once nothing is in flight: the connection closes
    /// quietly and the next command connects where the sentinels now say.
    private func leaveIfQuiet() {
        guard moveWanted, head == pending.count, case .ready = state else { return }
        moveWanted = false
        logger.info("redis replica reader leaves the primary to ask the sentinels again", metadata: ["server": "\(endpoint.description)"])
        metrics?.used.decrement()
        socket.close()
        onConnectionLost?()
        reader = nil
        pending.removeAll(keepingCapacity: true)
        head = 0
        expiredUpTo = 0
        if let t = timeoutTimer { loop.cancel(t); timeoutTimer = nil }
        state = .idle
    }

    private enum Next { case idle, backoff }

    /// Tears the connection down, fails everything pending with `error`, and decides how the next
    /// command reconnects.
    private func drop(_ error: CacheError, next: Next) {
        let wasConnecting: Bool
        if case .connecting = state { wasConnecting = true } else { wasConnecting = false }
        if case .ready = state { onConnectionLost?() } else if wasConnecting { onConnectionLost?() }
        if let metrics { dropped(error, wasConnecting: wasConnecting, metrics) }
        socket.close()
        reader = nil
        let victims = pending[head...]
        if !victims.isEmpty { metrics?.pending?.decrement(by: Double(victims.count)) }
        pending = []
        head = 0
        expiredUpTo = 0
        if let t = timeoutTimer { loop.cancel(t); timeoutTimer = nil }
        if next == .backoff || wasConnecting {
            enterBackoff("\(error)")
        } else {
            state = .idle
        }
        let waiting = held
        held = []
        confirming = false
        for v in victims { v.waiter.finish(.failure(error)) }
        for h in waiting { h.waiter.finish(.failure(error)) }
    }

    /// The metrics of a drop: an open connection is no longer open, and one that broke or could
    /// not be made (not one the loop's shutdown closed) is a failure.
    private func dropped(_ error: CacheError, wasConnecting: Bool, _ metrics: ConnectionMetrics) {
        if case .ready = state { metrics.used.decrement() }
        if error.code == .shutDown { return }
        if wasConnecting || isReady { metrics.failed(error) }
    }

    private var isReady: Bool {
        if case .ready = state { return true }
        return false
    }

    private func enterBackoff(_ reason: String) {
        failures += 1
        let ms = ReconnectBackoff.milliseconds(afterFailures: failures)
        state = .backoff(until: monotonicNanos() &+ UInt64(ms) * 1_000_000, reason: reason)
        logger.warning("redis connection failed; backing off", metadata: ["server": "\(endpoint.description)", "retry_ms": "\(ms)", "reason": "\(reason)"])
    }

}
