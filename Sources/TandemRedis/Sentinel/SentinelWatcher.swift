import Logging
import Synchronization
import TandemCache
import TandemTransport
import TandemLoop

/// Subscribes to `+switch-master`, `-sdown` and `+slave` on one sentinel at a time, on the loop, and
/// tells `heard` when the service's primary changes, when one of its replicas is back or new, or when
/// the subscription comes back after a break (an announcement may have been missed). A sentinel that fails is left for the next one after a short pause.
final class SentinelWatcher: LoopSocketDelegate, @unchecked Sendable {
    // Why @unchecked Sendable is safe: every mutable field is only touched on `loop`'s thread;
    // `start` and `stop` hop there with `execute` before touching anything.
    private let loop: any TandemEventLoop
    private let hosts: [ServerAddress]
    private let service: String
    /// AUTH, when the sentinels want a password: sent before SUBSCRIBE.
    private let login: [[[UInt8]]]
    private let tls: TLSClientContext?
    private let connectTimeout: Double
    private let heard: @Sendable (SentinelEvent) -> Void
    private let logger = Logger(label: "tandem.redis")

    private var socket: LoopSocket?
    /// One socket per sentinel, kept for the watcher's lifetime and reconnected as needed: a socket
    /// holds the watcher as its (weak) delegate, and a weak reference that outlives none of its
    /// sockets would leave the watcher's side table to look leaked to LeakSanitizer.
    private var sockets: [Int: LoopSocket] = [:]
    private var reader: RedisReplyReader?
    private var next = 0
    private var running = false
    private var broken = false
    /// A sentinel refused the login or the subscription: logged once until a subscription works.
    private var refusalLogged = false
    private var retry: TimerID?
    /// Subscription attempts that failed since the last one that worked.
    private var failuresInARow = 0

    init(loop: any TandemEventLoop, hosts: [ServerAddress], service: String, login: [[[UInt8]]], tls: TLSClientContext?,
         connectTimeout: Double, heard: @escaping @Sendable (SentinelEvent) -> Void) {
        self.loop = loop
        self.hosts = hosts
        self.service = service
        self.login = login
        self.tls = tls
        self.connectTimeout = connectTimeout
        self.heard = heard
    }

    func start() {
        try? loop.execute { [self] in
            guard !running else { return }
            running = true
            subscribe()
        }
    }

    func stop() {
        let work: @Sendable () -> Void = { [self] in
            running = false
            if let retry { loop.cancel(retry); self.retry = nil }
            closeSocket()
        }
        if loop.inEventLoop { work() } else { try? loop.execute(work) }
    }

    private func closeSocket() {
        socket?.close()  // kept in `sockets` for the next attempt on that sentinel
        socket = nil
        reader = nil
    }

    private func subscribe() {
        guard running, !hosts.isEmpty else { return }
        let index = next % hosts.count
        let address = hosts[index]
        next += 1
        guard case .tcp(let host, let port) = address else { return }
        let s = sockets[index] ?? LoopSocket(loop: loop, address: address, name: "sentinel \(host):\(port)", protocolName: "redis sentinel",
                                             connectTimeout: connectTimeout, tls: tls, tlsHost: host)
        sockets[index] = s
        s.delegate = self
        socket = s
        reader = RedisReplyReader()
        s.connect()
        for command in login { s.write { RESP.append(command, to: &$0) } }  // all sent once connected
        s.write { RESP.append(["SUBSCRIBE".bytes, "+switch-master".bytes, "-sdown".bytes, "+slave".bytes], to: &$0) }
    }

    /// How long to wait before the next subscription attempt after `failures` in a row: 500 ms while
    /// the sentinels are tried in turn the first time (a dead one is passed over quickly), then twice
    /// as long at each further failure, up to 10 s (every sentinel down, or refusing the login, is
    /// asked a few times a minute, not twice a second).
    static func retryDelayMilliseconds(failuresInARow failures: Int, sentinels: Int) -> Int {
        let beyond = failures - max(1, sentinels)
        guard beyond > 0 else { return 500 }
        return min(10_000, 500 << min(beyond, 5))
    }

    private func tryAgainSoon() {
        closeSocket()
        broken = true
        guard running, retry == nil else { return }
        failuresInARow += 1
        let delay = Self.retryDelayMilliseconds(failuresInARow: failuresInARow, sentinels: hosts.count)
        retry = loop.schedule(after: .milliseconds(Int64(delay))) { [self] in
            retry = nil
            subscribe()
        }
    }

    func socketConnected() {}

    func socketReceived(_ bytes: UnsafeRawBufferPointer) {
        if reader?.feed(bytes) == false { tryAgainSoon() }
    }

    func socketReadDone() {
        guard let reader else { return }
        // A reply may end the connection (`reader` is then nil, or a new one): stop there.
        if !reader.forEachReply({ handle($0); return self.reader === reader }) { tryAgainSoon() }
    }

    private func handle(_ value: RedisValue) {
        if case .error(let message) = value {
            // A wrong or missing SENTINEL_PASSWORD: the subscription cannot work on this sentinel.
            if !refusalLogged {
                refusalLogged = true
                logger.warning("redis sentinel refused the failover subscription", metadata: [
                    "service": "\(service)", "reason": "\(message)",
                ])
            }
            tryAgainSoon()
            return
        }
        guard case .array(let items) = value, items.count == 3, case .bulk(let kind) = items[0] else { return }
        if kind == "subscribe".bytes {
            // Subscribed again after a break: a switch may have happened meanwhile (one confirmation
            // per channel; the first one clears `broken`).
            if broken { heard(.resubscribed) }
            broken = false
            refusalLogged = false
            failuresInARow = 0
            return
        }
        guard kind == "message".bytes, case .bulk(let channel) = items[1], case .bulk(let payload) = items[2] else { return }
        let words = String(decoding: payload, as: UTF8.self).split(separator: " ")
        if channel == "+switch-master".bytes {
            // "<service> <old ip> <old port> <new ip> <new port>"
            guard words.count == 5, words[0] == service else { return }
            logger.warning("redis sentinel failover: new primary", metadata: [
                "service": "\(service)", "old": "\(words[1]):\(words[2])", "new": "\(words[3]):\(words[4])",
            ])
            heard(.primaryChanged)
        } else {
            // "-sdown" / "+slave": "slave <name> <ip> <port> @ <service> <primary ip> <primary port>"
            guard words.count == 8, words[0] == "slave", words[4] == "@", words[5] == service else { return }
            logger.info("redis sentinel: a replica is back or new", metadata: [
                "service": "\(service)", "event": "\(String(decoding: channel, as: UTF8.self))", "replica": "\(words[2]):\(words[3])",
            ])
            heard(.replicasChanged)
        }
    }

    func socketFailed(_ error: CacheError, connecting: Bool) { tryAgainSoon() }
}
