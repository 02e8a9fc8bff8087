import Logging
import Synchronization
import TandemCache
import TandemTransport
import TandemLoop

/// Asks Redis Sentinel where a service's primary is, and listens for its failovers.
///
/// Every new connection to the primary asks the sentinels, so that it goes to the current primary.
/// A failover is followed three ways: the sentinels' `+switch-master` announcement (a subscription on
/// the loop) moves the ``epoch`` on, and a connection made in an older epoch is replaced before its
/// next command; a connection that finds a replica where it asked for the primary (a stale answer)
/// is refused; a connection told `READONLY` is dropped. The sentinels are asked in turn, the one that
/// answered last first.
final class RedisSentinel: Sendable {
    let spec: RedisEndpoint.SentinelSpec
    /// Names the sentinels and the service in errors.
    let description: String
    let tls: TLSClientContext?
    let connectTimeout: Double
    let commandTimeout: Double
    private let preferred = Atomic<Int>(0)
    /// Moves on at every failover the sentinels announce (and after the announcements could have
    /// been missed): connections made in an earlier epoch are not used again.
    var epoch: UInt64 { epochCounter.value.load(ordering: .acquiring) }
    private let epochCounter = EpochCounter()
    /// Moves on when the sentinels announce a replica back (`-sdown`) or a new one (`+slave`), and after
    /// the announcements could have been missed: a replica reader that fell back to the primary then
    /// asks again (see ``ReplicaPlacement``).
    var replicaEpoch: UInt64 { replicaEpochCounter.value.load(ordering: .acquiring) }
    private let replicaEpochCounter = EpochCounter()
    /// How long a replica reader that fell back to the primary stays there at most before asking the
    /// sentinels again, when no announcement came (one missed, or a replica whose link to the primary
    /// was not yet up when it was announced).
    static let fallbackRecheckNanos: UInt64 = 5_000_000_000
    private let watcher: SentinelWatcher
    private let watching = Atomic<Bool>(false)

    init(spec: RedisEndpoint.SentinelSpec, description: String, tls: TLSClientContext?, connectTimeout: Double, commandTimeout: Double,
         loop: any TandemEventLoop) {
        self.spec = spec
        self.description = description
        self.tls = tls
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        let counter = epochCounter
        let replicaCounter = replicaEpochCounter
        watcher = SentinelWatcher(loop: loop, hosts: spec.hosts, service: spec.service, login: spec.handshake, tls: tls,
                                  connectTimeout: connectTimeout) { event in
            if event != .replicasChanged { counter.value.add(1, ordering: .releasing) }
            if event != .primaryChanged { replicaCounter.value.add(1, ordering: .releasing) }
        }
    }

    deinit { watcher.stop() }

    /// Stops listening (the cache was closed); the next connect starts again.
    func stopWatching() {
        if watching.exchange(false, ordering: .acquiringAndReleasing) { watcher.stop() }
    }

    /// The primary's host and port, as the first sentinel that knows the service says (blocks: on
    /// the blocking face's calling thread, or off the loop for the async face).
    func primary() throws(CacheError) -> (host: String, port: Int) {
        try ask(["SENTINEL".bytes, "get-master-addr-by-name".bytes, spec.service.bytes], what: "the primary") { reply in
            switch reply {
            case .array(let items):
                guard items.count == 2, case .bulk(let h) = items[0], case .bulk(let p) = items[1],
                      let address = Self.address(h, p) else { return .failure("something that is not a host and a port") }
                return .success(address)
            case .null: return .failure("that it does not know the service")
            case .error(let message): return .failure(SentinelAnswer(message))
            default: return .failure("something that is not a host and a port")
            }
        }
    }

    /// A replica of the service to read from: the healthy replicas the first sentinel that knows the
    /// service lists (not down by anyone's account, not disconnected, its link to the primary up),
    /// taken in turn; the primary when there is none (reads are then served where writes go, as
    /// redis-py's Sentinel does).
    func replica() throws(CacheError) -> (host: String, port: Int) {
        let healthy = try ask(["SENTINEL".bytes, "replicas".bytes, spec.service.bytes], what: "the replicas") { reply in
            switch reply {
            case .array(let entries):
                var found: [(host: String, port: Int)] = []
                for case .array(let fields) in entries {
                    var info: [String: String] = [:]
                    var i = 0
                    while i + 1 < fields.count {
                        if case .bulk(let k) = fields[i], case .bulk(let v) = fields[i + 1] {
                            info[String(decoding: k, as: UTF8.self)] = String(decoding: v, as: UTF8.self)
                        }
                        i += 2
                    }
                    let flags = Set((info["flags"] ?? "").split(separator: ",").map(String.init))
                    guard flags.isDisjoint(with: ["s_down", "o_down", "disconnected"]), info["master-link-status"] == "ok",
                          let ip = info["ip"], let port = info["port"], let address = Self.address(Array(ip.utf8), Array(port.utf8)) else { continue }
                    found.append(address)
                }
                return .success(found)
            case .error(let message): return .failure(SentinelAnswer(message))
            default: return .failure("something that is not a list of replicas")
            }
        }
        guard !healthy.isEmpty else { return try primary() }
        return healthy[Int(nextReplica.add(1, ordering: .relaxed).newValue % UInt64(healthy.count))]
    }
    private let nextReplica = Atomic<UInt64>(0)

    /// A host and a port from a sentinel's answer (nil: not one).
    private static func address(_ host: [UInt8], _ port: [UInt8]) -> (host: String, port: Int)? {
        guard let p = Int(String(decoding: port, as: UTF8.self)), (1...65535).contains(p), !host.isEmpty else { return nil }
        return (String(decoding: host, as: UTF8.self), p)
    }

    /// Asks the sentinels in turn (the one that answered last first) until one gives an answer
    /// `parse` accepts; the error names every sentinel and what it said. Starts the failover
    /// watcher on first use.
    private func ask<T>(_ command: [[UInt8]], what: String, _ parse: (RedisValue) -> Result<T, SentinelAnswer>) throws(CacheError) -> T {
        if !watching.exchange(true, ordering: .acquiringAndReleasing) { watcher.start() }
        var reasons: [String] = []
        var loginRefusals = 0
        let count = spec.hosts.count
        let first = preferred.load(ordering: .relaxed)
        for k in 0..<count {
            let i = (first + k) % count
            guard case .tcp(let host, let port) = spec.hosts[i] else { continue }
            let name = "\(host):\(port)"
            let endpoint = RedisEndpoint(address: .tcp(host: host, port: port), db: 0, username: nil, password: nil,
                                         tls: tls?.settings, tlsSource: "")
            do {
                let conn = try BlockingRedisConnection(endpoint: endpoint, tls: tls, connectTimeout: connectTimeout, commandTimeout: commandTimeout)
                for login in spec.handshake {
                    if case .error(let message) = try conn.run(login, operation: "AUTH") { throw SentinelLoginRefused(message: message) }
                }
                switch parse(try conn.run(command, operation: "SENTINEL")) {
                case .success(let answer):
                    preferred.store(i, ordering: .relaxed)
                    return answer
                case .failure(let why) where why.text.hasPrefix("NOAUTH"):
                    reasons.append("\(name) wants a password (OPTIONS.SENTINEL_PASSWORD): \(why.text)")
                    loginRefusals += 1
                case .failure(let why):
                    reasons.append("\(name) answered \(why.text)")
                }
            } catch let refused as SentinelLoginRefused {
                reasons.append("\(name) refused OPTIONS.SENTINEL_PASSWORD: \(refused.message)")
                loginRefusals += 1
            } catch {
                reasons.append("\(name): \(error)")
            }
        }
        let why = "no sentinel named \(what) of '\(spec.service)' (\(reasons.joined(separator: "; ")))"
        // Every sentinel refused the credentials: a settings problem, not an outage.
        if loginRefusals == count { throw CacheError.authenticationFailed(server: description, reason: why) }
        throw CacheError.connectionFailed(server: description, reason: why)
    }
}

/// A sentinel answered AUTH (or a command sent without it) with an error.
struct SentinelLoginRefused: Error {
    let message: String
}

/// Why a sentinel's answer was not what was asked for.
struct SentinelAnswer: Error, ExpressibleByStringLiteral {
    let text: String
    init(stringLiteral text: String) { self.text = text }
    init(_ text: String) { self.text = text }
}

/// A failover counter shared by a ``RedisSentinel`` and its watcher.
final class EpochCounter: Sendable {
    let value = Atomic<UInt64>(0)
}

/// Where a Sentinel replica reader's connection landed, kept by the connection in both faces. When
/// the sentinels list no healthy replica, a reader connects to the primary; it leaves it (between
/// commands, so that nothing in flight is lost) once the sentinels announce a replica back, or at the
/// latest ``RedisSentinel/fallbackRecheckNanos`` later, and asks again.
struct ReplicaPlacement {
    /// The connection reads from the primary, for want of a healthy replica.
    private(set) var onPrimary = false
    private var replicaEpoch: UInt64 = 0
    private var since: UInt64 = 0

    /// A connect begins (before the sentinels are asked, so that no announcement falls in between).
    mutating func connecting(_ sentinel: RedisSentinel) {
        onPrimary = false
        replicaEpoch = sentinel.replicaEpoch
        since = monotonicNanos()
    }

    /// The ROLE reply of the new connection.
    mutating func learned(role reply: RedisValue) {
        onPrimary = RedisTarget.isPrimaryRole(reply)
    }

    /// True when the connection should be replaced by one the sentinels place anew.
    func shouldMove(_ sentinel: RedisSentinel) -> Bool {
        onPrimary && (sentinel.replicaEpoch != replicaEpoch || monotonicNanos() &- since >= RedisSentinel.fallbackRecheckNanos)
    }
}

/// What a ``SentinelWatcher`` heard.
enum SentinelEvent: Sendable {
    /// `+switch-master`: a failover named a new primary.
    case primaryChanged
    /// `-sdown` or `+slave` for one of the service's replicas: one is back or new.
    case replicasChanged
    /// The subscription came back after a break: either may have happened meanwhile.
    case resubscribed
}

/// Where a node's connections go: a fixed server, or the primary the sentinels name at each connect.
struct RedisTarget: Sendable {
    let endpoint: RedisEndpoint
    let sentinel: RedisSentinel?
    /// Connections for reads only, to a replica the sentinels list (or the primary when they list
    /// none healthy). Such a connection takes any role: a read is right on either.
    var readsReplica = false
    /// A connection to a cluster replica for reads: it sends `READONLY` after the handshake, so
    /// that the replica answers reads of its primary's slots instead of redirecting them.
    var clusterReplica = false

    /// True when the server can change under the connections (a sentinel-managed primary): they
    /// check its role when they connect and reconnect when it answers `READONLY`.
    var followsFailover: Bool { sentinel != nil }

    /// The addresses to connect to and the name TLS checks (blocks: a name lookup, the sentinels).
    func find() throws(CacheError) -> (addresses: [ResolvedAddress], tlsHost: String) {
        guard let sentinel else { return (try endpoint.resolveAll(), endpoint.tlsHost) }
        let (host, port) = try readsReplica ? sentinel.replica() : sentinel.primary()
        return (try ServerAddress.tcp(host: host, port: port).resolveAll(description: endpoint.description), host)
    }

    /// The commands that prepare a new connection: AUTH and SELECT as needed, ROLE when the server
    /// must be a primary (or, for a replica reader, to learn whether it fell back to the primary),
    /// READONLY for a cluster replica that serves reads.
    var handshake: [[[UInt8]]] {
        endpoint.handshake + (followsFailover ? [["ROLE".bytes]] : []) + (clusterReplica ? [["READONLY".bytes]] : [])
    }

    /// True for a ROLE reply from a primary.
    static func isPrimaryRole(_ reply: RedisValue) -> Bool {
        guard case .array(let items) = reply, case .bulk(let role)? = items.first else { return false }
        return role == "master".bytes
    }

    /// Why a reply to a handshake command means the connection is unusable (nil: it is fine).
    func refusal(of command: [[UInt8]], reply: RedisValue) -> CacheError? {
        if case .error(let message) = reply {
            return command[0] == "AUTH".bytes
                ? .authenticationFailed(server: endpoint.description, reason: message)
                : .serverError(server: endpoint.description, message: message)
        }
        if command[0] == "ROLE".bytes, !readsReplica {
            guard Self.isPrimaryRole(reply) else {
                return .connectionFailed(server: endpoint.description, reason: "the server the sentinels named is not a primary (a failover under way?)")
            }
        }
        return nil
    }

    /// True for the reply a replica gives to a write: the primary has changed.
    static func isReadOnly(_ reply: RedisValue) -> Bool {
        if case .error(let message) = reply { return message.hasPrefix("READONLY") }
        return false
    }
}

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
        while let reader {
            switch reader.next() {
            case .reply(let value): handle(value)
            case .incomplete: return
            case .protocolError:
                tryAgainSoon()
                return
            }
        }
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
