import Logging
import Synchronization
import TandemCache
import TandemLoop
import TandemTransport

/// One server's invalidation connection for a near cache, on the loop: it logs in, learns its client
/// id, (in broadcast mode) turns tracking on for the cache's key prefix with itself as the
/// destination, and subscribes to `__redis__:invalidate`. Once subscribed, the near cache may keep
/// what is read from this server; each message drops the keys it names (a null one: everything).
/// When the connection fails or the server stops answering, the near cache drops everything it holds
/// and keeps nothing from this server until the subscription is back (reconnects with backoff).
final class InvalidationListener: LoopSocketDelegate, @unchecked Sendable {
    // Why @unchecked Sendable is safe: every mutable field except `started` (an atomic) is only
    // touched on `loop`'s thread; `start`, `restart` and `stop` hop there with `execute` first.
    private let loop: any TandemEventLoop
    private let target: RedisTarget
    private let server: Int
    private let near: NearCache
    /// In broadcast mode, the key prefix tracked ("" for every key).
    private let broadcastPrefix: String?
    private let answerTimeout: UInt64
    private let socket: LoopSocket
    private let logger = Logger(label: "tandem.redis")
    private let started = Atomic<Bool>(false)
    /// Reports the near cache's counters once a second while the listener runs.
    private let metrics: NearCacheMetrics?
    private var reportTimer: TimerID?

    /// What the next reply answers.
    private enum Expecting { case handshake([[UInt8]]), clientID, tracking, subscription }
    private var expecting: [Expecting] = []
    private var reader: RedisReplyReader?
    private var running = false
    private var subscribed = false
    private var failures = 0
    private var retry: TimerID?
    /// Fails the attempt when the server has not confirmed the subscription in time.
    private var answerTimer: TimerID?

    init(loop: any TandemEventLoop, target: RedisTarget, tls: TLSClientContext?, server: Int, near: NearCache,
         broadcastPrefix: String?, connectTimeout: Double, commandTimeout: Double, metrics: NearCacheMetrics? = nil) {
        self.metrics = metrics
        self.loop = loop
        self.target = target
        self.server = server
        self.near = near
        self.broadcastPrefix = broadcastPrefix
        answerTimeout = UInt64((connectTimeout + commandTimeout) * 1e9)
        let endpoint = target.endpoint
        if target.followsFailover {
            socket = LoopSocket(loop: loop, name: endpoint.description, protocolName: "redis", connectTimeout: connectTimeout, tls: tls) {
                () throws(CacheError) in try target.find()
            }
        } else {
            socket = LoopSocket(loop: loop, address: endpoint.address, name: endpoint.description, protocolName: "redis",
                                connectTimeout: connectTimeout, tls: tls, tlsHost: endpoint.tlsHost)
        }
        socket.delegate = self
    }

    /// Connects, once: later calls do nothing (cheap: one atomic load).
    func start() {
        guard !started.load(ordering: .relaxed),
              started.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        try? loop.execute { [self] in
            running = true
            connect()
            scheduleReport()
        }
    }

    /// Drops the connection and makes a new one (a reading connection found that the server does not
    /// know this connection's id: it is not the server the readers reach any more).
    func restart() {
        try? loop.execute { [self] in
            guard running, subscribed else { return }
            failed("the server no longer knows the invalidation connection", backoff: false)
        }
    }

    /// Closes the connection; the near cache drops everything. The next ``start()`` connects again.
    func stop() {
        let work: @Sendable () -> Void = { [self] in
            running = false
            started.store(false, ordering: .relaxed)
            if let retry { loop.cancel(retry); self.retry = nil }
            if let reportTimer { loop.cancel(reportTimer); self.reportTimer = nil }
            closeSocket()
            near.trackingLost(server: server)
            metrics?.report(near)
        }
        if loop.inEventLoop { work() } else { try? loop.execute(work) }
    }

    private func scheduleReport() {
        guard let metrics, running, reportTimer == nil else { return }
        reportTimer = loop.schedule(after: .seconds(1)) { [self] in
            reportTimer = nil
            metrics.report(near)
            scheduleReport()
        }
    }

    private func closeSocket() {
        socket.close()
        reader = nil
        expecting = []
        subscribed = false
        if let answerTimer { loop.cancel(answerTimer); self.answerTimer = nil }
    }

    private func connect() {
        guard running else { return }
        reader = RedisReplyReader()
        expecting = []
        socket.connect()
        guard socket.isOpen else { return }  // failed at once: already rescheduled
        for command in target.endpoint.handshake {
            send(command, .handshake(command))
        }
        send(["CLIENT".bytes, "ID".bytes], .clientID)
        answerTimer = loop.schedule(after: .nanoseconds(Int64(answerTimeout))) { [self] in
            answerTimer = nil
            if !subscribed { failed("no answer to the subscription in time", backoff: true) }
        }
    }

    private func send(_ command: [[UInt8]], _ expect: Expecting) {
        socket.write { RESP.append(command, to: &$0) }
        expecting.append(expect)
    }

    private func failed(_ reason: String, backoff: Bool) {
        let wasSubscribed = subscribed
        closeSocket()
        near.trackingLost(server: server)
        guard running, retry == nil else { return }
        if wasSubscribed {
            logger.warning("redis near cache: invalidation connection lost; local copies dropped", metadata: [
                "server": "\(target.endpoint.description)", "reason": "\(reason)",
            ])
        }
        if backoff { failures += 1 }
        let ms = backoff ? ReconnectBackoff.milliseconds(afterFailures: failures) : 0
        retry = loop.schedule(after: .milliseconds(Int64(ms))) { [self] in
            retry = nil
            connect()
        }
    }

    // MARK: LoopSocketDelegate

    func socketConnected() {}

    func socketReceived(_ bytes: UnsafeRawBufferPointer) {
        if reader?.feed(bytes) == false { failed("protocol error", backoff: true) }
    }

    func socketReadDone() {
        guard let reader else { return }
        // A reply may end the connection (`reader` is then nil, or a new one): stop there.
        if !reader.forEachReply({ handle($0); return self.reader === reader }) { failed("protocol error", backoff: true) }
    }

    func socketFailed(_ error: CacheError, connecting: Bool) {
        failed("\(error)", backoff: true)
    }

    private func handle(_ value: RedisValue) {
        if subscribed {
            guard case .array(let items) = value, items.count == 3, case .bulk(let kind) = items[0], kind == "message".bytes else { return }
            switch items[2] {
            case .array(let keys): near.invalidate(keys.compactMap { if case .bulk(let k) = $0 { k } else { nil } })
            case .null: near.flush()  // FLUSHDB / FLUSHALL
            default: break
            }
            return
        }
        guard !expecting.isEmpty else { return failed("a reply nothing asked for", backoff: true) }
        let expected = expecting.removeFirst()
        if case .error(let message) = value {
            logger.error("redis near cache: the server refused the invalidation connection", metadata: [
                "server": "\(target.endpoint.description)", "reason": "\(message)",
            ])
            return failed(message, backoff: true)
        }
        switch expected {
        case .handshake(let command):
            if let refusal = target.refusal(of: command, reply: value) { failed("\(refusal)", backoff: true) }
        case .clientID:
            guard case .integer(let id) = value else { return failed("CLIENT ID answered \(value)", backoff: true) }
            ownID = id
            if let prefix = broadcastPrefix {
                var command: [[UInt8]] = ["CLIENT".bytes, "TRACKING".bytes, "ON".bytes, "REDIRECT".bytes, String(id).bytes, "BCAST".bytes]
                if !prefix.isEmpty { command += ["PREFIX".bytes, prefix.bytes] }
                send(command, .tracking)
            }
            send(["SUBSCRIBE".bytes, "__redis__:invalidate".bytes], .subscription)
        case .tracking:
            break
        case .subscription:
            subscribed = true
            failures = 0
            if let answerTimer { loop.cancel(answerTimer); self.answerTimer = nil }
            near.trackingStarted(server: server, id: ownID)
        }
    }

    private var ownID: Int64 = 0
}
