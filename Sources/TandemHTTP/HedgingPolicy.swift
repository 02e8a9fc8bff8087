import Synchronization
import TandemLoop

/// Hedged requests, with the semantics of gRPC's hedging policy (proposal A6): the first copy of an
/// idempotent request goes out at once, and while no answer has come, another copy goes out after
/// each `delay`, up to `maxAttempts` copies in all. The first response (any status) wins and the
/// other copies are cancelled (their transfers removed); if every copy fails, the last error is thrown.
/// A shared ``RetryThrottle`` caps the extra load: a copy after the first goes out only while the
/// bucket allows retries, and every failed copy takes a token.
///
/// The delay is fixed, or a percentile of the latencies this policy has seen (for example the 95th,
/// so that only the slowest twentieth get a second copy). Copies cancel cleanly inside `fanOut` too.
/// Give it to a client (``UpstreamClientConfiguration/hedgingPolicy``) or to one call
/// (``AsyncUpstreamClient/send(_:retry:hedge:)``); a call with a hedging policy is not also retried.
public struct HedgingPolicy: Sendable {
    /// When the next copy goes out.
    public enum Delay: Sendable {
        /// After this long without an answer.
        case fixed(Duration)
        /// After the given percentile (0...100) of the latencies seen so far; `fallback` until there
        /// are at least 20 of them.
        case percentile(Double, fallback: Duration)
    }

    /// Copies in all, the first included (1: no hedging; gRPC allows up to 5).
    public var maxAttempts: Int
    /// When each further copy goes out.
    public var delay: Delay
    /// Hedge POST and PATCH too (only when the upstream makes them safe to repeat).
    public var hedgeNonIdempotent: Bool
    /// The shared budget that caps extra copies (nil: no cap beyond `maxAttempts`).
    public var throttle: RetryThrottle?
    /// What this policy has seen: latencies for the percentile delay, and counts.
    public let statistics = HedgingStatistics()

    /// A policy: by default 2 copies, the second after 50 ms.
    public init(maxAttempts: Int = 2, delay: Delay = .fixed(.milliseconds(50)), hedgeNonIdempotent: Bool = false,
                throttle: RetryThrottle? = nil) {
        self.maxAttempts = maxAttempts
        self.delay = delay
        self.hedgeNonIdempotent = hedgeNonIdempotent
        self.throttle = throttle
    }

    /// Why this policy cannot work, if it cannot.
    var problem: String? {
        if maxAttempts < 1 { return "hedging policy: maxAttempts must be at least 1, got \(maxAttempts)" }
        switch delay {
        case .fixed(let d) where d < .zero: return "hedging policy: the delay must not be negative"
        case .percentile(let p, let d) where !(0...100).contains(p) || d < .zero:
            return "hedging policy: the percentile must be within 0...100 and the fallback not negative"
        default: return nil
        }
    }

    /// The delay before each further copy, now.
    var currentDelay: Duration {
        switch delay {
        case .fixed(let d): return d
        case .percentile(let p, let fallback): return statistics.latencyPercentile(p) ?? fallback
        }
    }
}

/// Counts of a ``HedgingPolicy``'s requests, and the window of recent latencies its percentile delay
/// reads. Shared by every copy of the policy.
public final class HedgingStatistics: Sendable {
    private struct State {
        var requests = 0
        var copiesSent = 0
        var latencies: [Duration] = []
        var next = 0
    }
    private let state = Mutex(State())
    private static let window = 256

    /// Requests sent through the policy (each counted once, however many copies it took).
    public var requests: Int { state.locked { $0.requests } }
    /// Copies sent beyond the first: the extra load the policy caused.
    public var extraCopies: Int { state.locked { $0.copiesSent } }

    func countRequest() { state.locked { $0.requests += 1 } }
    func countCopy() { state.locked { $0.copiesSent += 1 } }

    func record(_ latency: Duration) {
        state.locked { s in
            if s.latencies.count < HedgingStatistics.window {
                s.latencies.append(latency)
            } else {
                s.latencies[s.next] = latency
                s.next = (s.next + 1) % HedgingStatistics.window
            }
        }
    }

    /// The `p`th percentile of the recent latencies; nil with fewer than 20.
    func latencyPercentile(_ p: Double) -> Duration? {
        let sorted = state.locked { $0.latencies }.sorted()
        guard sorted.count >= 20 else { return nil }
        let i = min(sorted.count - 1, Int((p / 100 * Double(sorted.count - 1)).rounded(.up)))
        return sorted[i]
    }
}
