import Synchronization
import TandemLoop

/// How a cache behaves when its server fails: off by default (errors stay typed and every call tries
/// the server).
public struct CacheResilience: Sendable, Hashable {
    /// Django-redis's `IGNORE_EXCEPTIONS`: a read that fails because the server failed is a miss, a
    /// write that fails is logged and counted (the `errors` counter) but not thrown. Semantic errors
    /// (an invalid key, a value that is not an integer) are still thrown, and so is every `incr`,
    /// `clear` and `incrVersion` failure (there is no value to make up).
    public var failOpen: Bool
    /// After this many consecutive server failures the breaker opens: calls skip the server and fail
    /// at once (``CacheError/circuitOpen(alias:)``, or a miss with ``failOpen``). 0: no breaker.
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
        switch e {
        case .timeout, .connectionFailed, .tls, .poolExhausted, .serverError, .authenticationFailed, .circuitOpen: return true
        default: return false
        }
    }
}

/// Counts consecutive server failures of one cache and decides whether a call may try the server.
final class CircuitBreaker: Sendable {
    private struct State {
        var failures = 0
        var openUntil: UInt64?
        var probing = false
    }
    private let state = Mutex(State())
    private let threshold: Int
    private let cooldownNanos: UInt64

    init(threshold: Int, cooldown: Duration) {
        self.threshold = threshold
        let c = cooldown.components
        cooldownNanos = UInt64(max(0, c.seconds)) * 1_000_000_000 + UInt64(max(0, c.attoseconds / 1_000_000_000))
    }

    /// Whether a call may go to the server: always while closed; while open, only the one probe that
    /// comes after the cool-down.
    func admit() -> Bool {
        state.locked { s in
            guard let until = s.openUntil else { return true }
            if s.probing || monotonicNanos() < until { return false }
            s.probing = true
            return true
        }
    }

    /// Records how an admitted call went (`failed`: a server failure).
    /// Returns true when this call opened the breaker (for a log line).
    @discardableResult
    func record(failed: Bool) -> Bool {
        state.locked { s in
            guard failed else {
                s = State()
                return false
            }
            s.failures += 1
            let wasOpen = s.openUntil != nil
            if s.probing || s.failures >= threshold {
                s.openUntil = monotonicNanos() &+ cooldownNanos
                s.probing = false
            }
            return !wasOpen && s.openUntil != nil
        }
    }

    /// True while calls skip the server.
    var isOpen: Bool { state.locked { $0.openUntil != nil } }
}
