import CoreMetrics
import Synchronization
import TandemLoop

/// How a cache behaves when its server fails: off by default (errors stay typed and every call tries
/// the server).
public struct CacheResilience: Sendable, Hashable {
    /// Django-redis's `IGNORE_EXCEPTIONS`: a read that fails because the server failed is a miss; a
    /// write, delete or touch that fails is not applied and not thrown, but counted per operation
    /// (`tandem_cache_fail_open_total`) and logged at warning (at most once per 10 s per operation).
    /// Semantic errors (an invalid key, a value that is not an integer) are still thrown, and so is
    /// every `incr`, `clear` and `incrVersion` failure (there is no value to make up), and a
    /// `delete(_:failOpen: false)`.
    public var failOpen: Bool
    /// After this many consecutive failures of one server to answer (a connection failure or a
    /// timeout; an error the server answers with does not count) that server's breaker opens: calls
    /// for keys on that server skip it and fail at once (``CacheError/circuitOpen(alias:)``, or a
    /// miss with ``failOpen``). There is a breaker per server where the backend places keys on
    /// servers (memcached with several servers, Redis Cluster), else one per cache. 0: no breaker.
    public var breakerThreshold: Int
    /// How long an open breaker skips the server before one call probes it; the probe's outcome
    /// closes the breaker or opens it for another cool-down.
    public var breakerCooldown: Duration

    /// Cross-process stampede protection for `getOrSet` (nil: off unless a call asks for it).
    public var stampedeLock: StampedeLock?
    /// XFetch's beta for `getOrSet`'s probabilistic early refresh (nil: off unless a call asks for it).
    public var earlyRefreshBeta: Double?

    /// Settings; the defaults are off.
    public init(failOpen: Bool = false, breakerThreshold: Int = 0, breakerCooldown: Duration = .seconds(5),
                stampedeLock: StampedeLock? = nil, earlyRefreshBeta: Double? = nil) {
        self.earlyRefreshBeta = earlyRefreshBeta
        self.failOpen = failOpen
        self.breakerThreshold = breakerThreshold
        self.breakerCooldown = breakerCooldown
        self.stampedeLock = stampedeLock
    }

    /// True when an error means the server (not the call) failed: what fail-open hides and the breaker counts.
    static func isServerFailure(_ error: any Error) -> Bool {
        guard let e = error as? CacheError else { return false }
        switch e.code {
        case .timeout, .connectionFailed, .tls, .poolExhausted, .serverError, .authenticationFailed, .circuitOpen: return true
        default: return false
        }
    }
}

extension CacheResilience {
    /// True when an error says the server could not be reached or did not answer in time: the only
    /// failures a breaker counts. A server that answers with an error (WRONGTYPE, OOM, NOAUTH) is up,
    /// and a pool with no free connection is a local condition.
    static func isUnreachable(_ error: any Error) -> Bool {
        guard let e = error as? CacheError else { return false }
        switch e.code {
        case .timeout, .connectionFailed: return true
        default: return false
        }
    }
}

/// A cache's breakers: one per server its backend names (``CacheBackend/breakerScope(forKey:)``), and
/// one for calls that no single server answers (several keys, `clear`) or a backend with one server.
/// A dead server of several then opens its own breaker only.
final class CircuitBreakers: Sendable {
    private let threshold: Int
    private let cooldown: Duration
    /// For calls that name no server.
    let whole: CircuitBreaker
    private let byServer = Mutex<[String: CircuitBreaker]>([:])
    private let metrics: BreakerMetrics.Factory?

    init(threshold: Int, cooldown: Duration, metrics: BreakerMetrics.Factory? = nil) {
        self.threshold = threshold
        self.cooldown = cooldown
        self.metrics = metrics
        whole = CircuitBreaker(threshold: threshold, cooldown: cooldown, server: nil, metrics: metrics?.make(server: nil))
    }

    /// The breaker of `server` (made at its first call), or the backend-wide one for nil.
    func breaker(for server: String?) -> CircuitBreaker {
        guard let server else { return whole }
        return byServer.locked { map in
            if let b = map[server] { return b }
            let b = CircuitBreaker(threshold: threshold, cooldown: cooldown, server: server, metrics: metrics?.make(server: server))
            map[server] = b
            return b
        }
    }
}

/// Counts consecutive failures of one server (or of a backend as a whole) and decides whether a call
/// may try it.
final class CircuitBreaker: Sendable {
    private struct State {
        var failures = 0
        var openUntil: UInt64?
        var probing = false
    }
    private let state = Mutex(State())
    private let threshold: Int
    private let cooldownNanos: UInt64

    /// The server this breaker guards (nil: the backend as a whole).
    let server: String?
    private let metrics: BreakerMetrics?

    init(threshold: Int, cooldown: Duration, server: String? = nil, metrics: BreakerMetrics? = nil) {
        self.threshold = threshold
        self.server = server
        self.metrics = metrics
        let c = cooldown.components
        cooldownNanos = UInt64(max(0, c.seconds)) * 1_000_000_000 + UInt64(max(0, c.attoseconds / 1_000_000_000))
    }

    /// Whether a call may go to the server: always while closed; while open, only the one probe that
    /// comes after the cool-down.
    func admit() -> Bool {
        let (admitted, probe) = state.locked { s -> (Bool, Bool) in
            guard let until = s.openUntil else { return (true, false) }
            if s.probing || monotonicNanos() < until { return (false, false) }
            s.probing = true
            return (true, true)
        }
        if probe { metrics?.halfOpen.increment() }
        return admitted
    }

    /// Records how an admitted call went (`failed`: a server failure).
    /// Returns true when this call opened the breaker (for a log line).
    @discardableResult
    func record(failed: Bool) -> Bool {
        let (opened, reopened, closed) = state.locked { s -> (Bool, Bool, Bool) in
            guard failed else {
                let wasOpen = s.openUntil != nil
                s = State()
                return (false, false, wasOpen)
            }
            s.failures += 1
            let wasOpen = s.openUntil != nil
            let wasProbing = s.probing
            if s.probing || s.failures >= threshold {
                s.openUntil = monotonicNanos() &+ cooldownNanos
                s.probing = false
            }
            return (!wasOpen && s.openUntil != nil, wasProbing, false)
        }
        if let metrics, opened || reopened || closed { (closed ? metrics.closed : metrics.opened).increment() }
        return opened
    }

    /// True while calls skip the server.
    var isOpen: Bool { state.locked { $0.openUntil != nil } }
}

/// A breaker's state changes, `tandem.cache.breaker.transitions` (counter) with `alias`, `server`
/// (`*` for the breaker of calls that name no server) and `state`: `open` (failures reached the
/// threshold, or the probe failed), `half_open` (the cool-down ended and one call probes) and
/// `closed` (a call succeeded on an open or probing breaker).
struct BreakerMetrics: Sendable {
    let opened: Counter
    let halfOpen: Counter
    let closed: Counter

    /// Makes the metrics of each breaker of one cache.
    struct Factory: Sendable {
        let alias: String
        let factory: any MetricsFactory

        static func make(alias: String, factory: (any MetricsFactory)?) -> Factory? {
            observedMetricsFactory(factory).map { Factory(alias: alias, factory: $0) }
        }

        func make(server: String?) -> BreakerMetrics {
            let dims = [("alias", alias), ("server", server ?? "*")]
            func counter(_ state: String) -> Counter {
                Counter(label: "tandem.cache.breaker.transitions", dimensions: dims + [("state", state)], factory: factory)
            }
            return BreakerMetrics(opened: counter("open"), halfOpen: counter("half_open"), closed: counter("closed"))
        }
    }
}
