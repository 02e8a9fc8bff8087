import CHiredis
import Dispatch
import Logging
import TandemCache
import TandemLoop

#if canImport(Glibc)
import Glibc
#endif

/// One Redis connection driven by an event loop: the loop does the socket I/O, hiredis's reply reader
/// parses, hiredis's formatter builds the commands.
///
/// Everything submitted in one loop turn goes out in one write (auto-pipelining). Replies come back
/// in order. A command that outlives its timeout fails with ``CacheError/timeout(operation:server:)``
/// and its late reply is dropped; a broken connection fails every pending command with a typed error
/// and the next command reconnects (with backoff after failed attempts).
final class RedisAsyncConnection: @unchecked Sendable {
    // Why @unchecked Sendable is safe: every mutable field below is only touched on `loop`'s thread.
    // The only entry points from other threads are `command`/`pipeline`/`shutdown`, which hop to the
    // loop with `withLoopPromise` / `execute` before touching anything.

    let loop: any EventLoop
    let endpoint: RedisEndpoint
    let commandTimeout: UInt64
    let connectTimeout: UInt64
    private let logger = Logger(label: "tandem.redis")

    private enum State {
        case idle
        /// Looking up the host (off the loop), then connecting to its addresses in turn.
        case connecting
        case ready
        case backoff(until: UInt64, reason: String)
        /// The loop shut down: every command fails at once.
        case closed
    }
    private struct Pending {
        let deadline: UInt64
        let done: (Result<RedisValue, CacheError>) -> Void
    }

    private var state = State.idle
    private var fd: Int32 = -1
    private var watchID: WatchID?
    private var interest: IOEvents = []
    private var reader: UnsafeMutablePointer<redisReader>?
    private var out: [UInt8] = []
    private var outSent = 0
    private var pending: [Pending] = []
    private var head = 0
    /// Pending entries before this index have already been failed by the timeout timer.
    private var expiredUpTo = 0
    private var timeoutTimer: TimerID?
    private var connectTimer: TimerID?
    private var flushScheduled = false
    private var failures = 0
    /// The addresses of the connect in progress and the one being tried.
    private var addresses: [ResolvedAddress] = []
    private var addressIndex = 0
    /// Counts connect attempts, so that a name lookup that finishes after its attempt ended is ignored.
    private var attempt: UInt64 = 0
    /// This connection's shutdown hook on the loop (it holds the connection until removed).
    private var hookID: ShutdownHookID?
    private var readBuffer = [UInt8](repeating: 0, count: 65536)

    init(loop: any EventLoop, endpoint: RedisEndpoint, commandTimeout: Double, connectTimeout: Double) {
        self.loop = loop
        self.endpoint = endpoint
        self.commandTimeout = UInt64(commandTimeout * 1e9)
        self.connectTimeout = UInt64(connectTimeout * 1e9)
    }

    deinit {
        if let reader { redisReaderFree(reader) }
        if fd >= 0 { close(fd) }
    }

    // MARK: from any thread

    /// Sends one command and waits for its reply without blocking a thread.
    func command(_ args: [[UInt8]]) async throws -> RedisValue {
        do {
            return try await withLoopPromise(on: loop) { (p: LoopPromise<RedisValue>) in
                self.send(args) { r in p.complete(r.mapError { $0 }) }
            }
        } catch TandemError.loopShutDown {
            throw CacheError.shutDown("the event loop of \(endpoint.description)")
        }
    }

    /// Sends several commands in one write and waits for all their replies.
    func pipeline(_ commands: [[[UInt8]]]) async throws -> [RedisValue] {
        if commands.isEmpty { return [] }
        do {
            return try await pipelineOnLoop(commands)
        } catch TandemError.loopShutDown {
            throw CacheError.shutDown("the event loop of \(endpoint.description)")
        }
    }

    private func pipelineOnLoop(_ commands: [[[UInt8]]]) async throws -> [RedisValue] {
        try await withLoopPromise(on: loop) { (p: LoopPromise<[RedisValue]>) in
            var results = [RedisValue](repeating: .null, count: commands.count)
            var remaining = commands.count
            for (i, c) in commands.enumerated() {
                self.send(c) { r in
                    switch r {
                    case .success(let v):
                        results[i] = v
                        remaining -= 1
                        if remaining == 0 { p.succeed(results) }
                    case .failure(let e):
                        p.fail(e)
                    }
                }
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

    private func send(_ args: [[UInt8]], _ done: @escaping (Result<RedisValue, CacheError>) -> Void) {
        if hookID == nil, !isClosed {
            hookID = loop.onShutdown { [self] in loopShuttingDown() }
        }
        if case .backoff(let until, let reason) = state {
            if monotonicNanos() < until {
                done(.failure(.connectionFailed(server: endpoint.description, reason: "reconnecting after: \(reason)")))
                return
            }
            state = .idle
        }
        if case .closed = state {
            done(.failure(.shutDown("the event loop of \(endpoint.description)")))
            return
        }
        if case .idle = state {
            startConnect()
            if case .backoff(_, let reason) = state {
                done(.failure(.connectionFailed(server: endpoint.description, reason: reason)))
                return
            }
        }
        append(args, done)
        if case .ready = state { scheduleFlush() }
    }

    private func append(_ args: [[UInt8]], _ done: @escaping (Result<RedisValue, CacheError>) -> Void) {
        var target: UnsafeMutablePointer<CChar>?
        let len = withRedisArgv(args) { argc, argv, lens in redisFormatCommandArgv(&target, argc, argv, lens) }
        guard len > 0, let target else {
            done(.failure(.serverError(server: endpoint.description, message: "could not format the command")))
            return
        }
        target.withMemoryRebound(to: UInt8.self, capacity: Int(len)) {
            out.append(contentsOf: UnsafeBufferPointer(start: $0, count: Int(len)))
        }
        redisFreeCommand(target)
        pending.append(Pending(deadline: monotonicNanos() &+ commandTimeout, done: done))
        armTimeout()
    }

    private func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        do {
            // Runs after the rest of this turn's submissions: they all go out in one write.
            try loop.execute { self.flush() }
        } catch {
            flushScheduled = false
            flush()
        }
    }

    private func setInterest(_ events: IOEvents) {
        guard let watchID, events != interest else { return }
        interest = events
        loop.updateWatch(watchID, events: events)
    }

    private func flush() {
        flushScheduled = false
        guard case .ready = state, fd >= 0 else { return }
        while outSent < out.count {
            let n = out.withUnsafeBytes { raw in
                Glibc.send(fd, raw.baseAddress! + outSent, raw.count - outSent, Int32(MSG_NOSIGNAL))
            }
            if n > 0 {
                outSent += n
            } else if n < 0 && errno == EINTR {
                continue
            } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                break
            } else {
                drop(.connectionFailed(server: endpoint.description, reason: "write failed: \(String(cString: strerror(errno)))"), next: .idle)
                return
            }
        }
        if outSent == out.count {
            out.removeAll(keepingCapacity: out.count < 1 << 20)
            outSent = 0
            setInterest(.read)
        } else {
            setInterest([.read, .write])
        }
    }

    /// Starts a connection: the handshake is queued first, then the host is looked up (off the loop
    /// thread when it is a name) and its addresses are tried in turn, all within the connect timeout.
    private func startConnect() {
        attempt &+= 1
        state = .connecting
        reader = redisReaderCreate()
        connectTimer = loop.schedule(after: .nanoseconds(Int64(connectTimeout))) { [self] in
            connectTimer = nil
            if case .connecting = state {
                drop(.timeout(operation: "redis connect", server: endpoint.description), next: .backoff)
            }
        }
        for command in endpoint.handshake {
            let isAuth = command[0] == "AUTH".bytes
            append(command) { [self] r in
                switch r {
                case .success(.error(let message)):
                    let e: CacheError = isAuth
                        ? .authenticationFailed(server: endpoint.description, reason: message)
                        : .serverError(server: endpoint.description, message: message)
                    logger.error("redis handshake failed", metadata: ["server": "\(endpoint.description)", "error": "\(message)"])
                    drop(e, next: .backoff)
                default:
                    break
                }
            }
        }
        let direct: [ResolvedAddress]?
        do {
            direct = try endpoint.addressesWithoutLookup()
        } catch {
            drop(error, next: .backoff)
            return
        }
        if let direct {
            tryAddresses(direct, from: 0, lastFailure: nil)
            return
        }
        // A host name: look it up on another thread (getaddrinfo blocks) and come back to the loop.
        let mine = attempt
        let target = endpoint
        DispatchQueue.global().async { [self] in
            let result = Result { () throws(CacheError) in try target.resolveAll() }
            // If the loop is gone, its shutdown hook has already failed everything pending.
            try? loop.execute { [self] in
                guard attempt == mine, case .connecting = state, fd < 0 else { return }
                switch result {
                case .success(let addrs): tryAddresses(addrs, from: 0, lastFailure: nil)
                case .failure(let e): drop(e, next: .backoff)
                }
            }
        }
    }

    /// Connects to `addrs[index...]`, the first that does not refuse at once; when none is left, the
    /// connection fails with the last reason.
    private func tryAddresses(_ addrs: [ResolvedAddress], from index: Int, lastFailure: String?) {
        var i = index
        var last = lastFailure
        while i < addrs.count {
            switch addrs[i].startConnect() {
            case .failure(let f):
                last = f.reason
                i += 1
            case .success(let (s, inProgress)):
                fd = s
                addresses = addrs
                addressIndex = i
                do {
                    interest = [.read, .write]
                    watchID = try loop.watch(s, events: interest) { [self] ev in onEvent(ev) }
                } catch {
                    drop(.connectionFailed(server: endpoint.description, reason: "cannot watch the socket: \(error)"), next: .backoff)
                    return
                }
                if !inProgress { connected() }
                return
            }
        }
        drop(.connectionFailed(server: endpoint.description, reason: last ?? "no address"), next: .backoff)
    }

    private func connected() {
        state = .ready
        failures = 0
        addresses = []
        if let t = connectTimer { loop.cancel(t); connectTimer = nil }
        flush()
    }

    /// The loop is shutting down: fail everything pending and refuse what comes later.
    private func loopShuttingDown() {
        hookID = nil
        drop(.shutDown("the event loop of \(endpoint.description)"), next: .idle)
        state = .closed
    }

    private var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    private func onEvent(_ ev: IOEvents) {
        if case .connecting = state {
            guard ev.contains(.write) || ev.contains(.error) || ev.contains(.read) else { return }
            let err = ResolvedAddress.connectError(fd)
            if err != 0 {
                // This address refused: close its socket (nothing was sent on it) and try the next.
                if let w = watchID { loop.unwatch(w); watchID = nil }
                close(fd)
                fd = -1
                tryAddresses(addresses, from: addressIndex + 1, lastFailure: "connect failed: \(String(cString: strerror(err)))")
                return
            }
            connected()
            return
        }
        guard case .ready = state else { return }
        if ev.contains(.read) || ev.contains(.error) { readAvailable() }
        if ev.contains(.write), case .ready = state { flush() }
    }

    private func readAvailable() {
        guard let reader else { return }
        while true {
            let n = readBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                let fed = readBuffer.withUnsafeBytes {
                    redisReaderFeed(reader, $0.baseAddress!.assumingMemoryBound(to: CChar.self), n)
                }
                if fed != chiredis_ok {
                    drop(.connectionFailed(server: endpoint.description, reason: "protocol error"), next: .idle)
                    return
                }
                if n < readBuffer.count { break }
            } else if n == 0 {
                drainReplies()
                drop(.connectionFailed(server: endpoint.description, reason: "the server closed the connection"), next: .idle)
                return
            } else if errno == EINTR {
                continue
            } else if errno == EAGAIN || errno == EWOULDBLOCK {
                break
            } else {
                drop(.connectionFailed(server: endpoint.description, reason: "read failed: \(String(cString: strerror(errno)))"), next: .idle)
                return
            }
        }
        drainReplies()
    }

    private func drainReplies() {
        guard let reader else { return }
        while case .ready = state {
            var reply: UnsafeMutableRawPointer?
            if redisReaderGetReply(reader, &reply) != chiredis_ok {
                drop(.connectionFailed(server: endpoint.description, reason: "protocol error"), next: .idle)
                return
            }
            guard let r = reply else { break }
            let value = RedisValue(reply: r)
            freeReplyObject(r)
            guard head < pending.count else {
                drop(.connectionFailed(server: endpoint.description, reason: "reply without a command"), next: .idle)
                return
            }
            let p = pending[head]
            head += 1
            // A command that already timed out (or whose task was cancelled) was completed with an
            // error; its promise ignores this late reply.
            p.done(.success(value))
        }
        if head == pending.count {
            pending.removeAll(keepingCapacity: pending.count < 4096)
            head = 0
            expiredUpTo = 0
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
        for v in victims { v.done(.failure(.timeout(operation: "redis command", server: endpoint.description))) }
        // The oldest command has waited three timeouts: the connection is stuck, not just slow.
        if head < pending.count, now &- (pending[head].deadline &- commandTimeout) > max(3 * commandTimeout, commandTimeout + 1_000_000_000) {
            drop(.timeout(operation: "redis command", server: endpoint.description), next: .idle)
            return
        }
        armTimeout()
    }

    private enum Next { case idle, backoff }

    /// Tears the connection down, fails everything pending with `error`, and decides how the next
    /// command reconnects.
    private func drop(_ error: CacheError, next: Next) {
        let wasConnecting: Bool
        if case .connecting = state { wasConnecting = true } else { wasConnecting = false }
        teardownSocket()
        addresses = []
        let victims = pending[head...]
        pending = []
        head = 0
        expiredUpTo = 0
        out = []
        outSent = 0
        if let t = timeoutTimer { loop.cancel(t); timeoutTimer = nil }
        if let t = connectTimer { loop.cancel(t); connectTimer = nil }
        if next == .backoff || wasConnecting {
            enterBackoff("\(error)")
        } else {
            state = .idle
        }
        for v in victims { v.done(.failure(error)) }
    }

    private func enterBackoff(_ reason: String) {
        failures += 1
        // Short: a cache should be back within a fraction of a second of its server. Attempts against
        // a server that is down cost one refused connect each.
        let ms = min(250, 25 << min(failures, 4))
        state = .backoff(until: monotonicNanos() &+ UInt64(ms) * 1_000_000, reason: reason)
        logger.warning("redis connection failed; backing off", metadata: ["server": "\(endpoint.description)", "retry_ms": "\(ms)", "reason": "\(reason)"])
    }

    private func teardownSocket() {
        if let w = watchID { loop.unwatch(w); watchID = nil }
        interest = []
        if fd >= 0 { close(fd); fd = -1 }
        if let reader { redisReaderFree(reader); self.reader = nil }
    }
}
