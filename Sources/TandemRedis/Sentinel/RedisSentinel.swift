import CoreMetrics
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
///
/// Each announced failover counts in `tandem.redis.sentinel.failovers`, with
/// `tandem.redis.sentinel.service` (the service's name).
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
         loop: any TandemEventLoop, metricsFactory: (any MetricsFactory)? = nil) {
        self.spec = spec
        self.description = description
        self.tls = tls
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        let counter = epochCounter
        let replicaCounter = replicaEpochCounter
        let failovers = observedMetricsFactory(metricsFactory).map {
            Counter(label: "tandem.redis.sentinel.failovers", dimensions: [("tandem.redis.sentinel.service", spec.service)], factory: $0)
        }
        watcher = SentinelWatcher(loop: loop, hosts: spec.hosts, service: spec.service, login: spec.handshake, tls: tls,
                                  connectTimeout: connectTimeout) { event in
            if event != .replicasChanged { counter.value.add(1, ordering: .releasing) }
            if event == .primaryChanged { failovers?.increment() }
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
