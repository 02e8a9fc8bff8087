import Synchronization
import TandemLoop

/// When and how an upstream request is tried again, with the semantics of gRPC's retry policy
/// (proposal A6): `maxAttempts` counts the first attempt; between attempts the client waits a random
/// time between 0 and the current backoff, which starts at `initialBackoff` and grows by
/// `backoffMultiplier` up to `maxBackoff`; only the statuses and errors named here are retried; only
/// idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) unless `retryNonIdempotent`; one
/// `deadline` covers every attempt and every wait; and a shared ``RetryThrottle`` stops retries when
/// too many attempts fail, so that retries cannot multiply an outage.
///
/// Give it to a client (``UpstreamClientConfiguration/retryPolicy``) or to one call
/// (``AsyncUpstreamClient/send(_:retry:hedge:)``). A policy that cannot work (fewer than one attempt, a
/// negative backoff) fails the request with ``UpstreamError/invalidRequest(reason:)`` before any I/O.
public struct RetryPolicy: Sendable {
    /// Errors that may be retried.
    public enum RetryableError: Sendable, Hashable {
        /// ``UpstreamError/connectFailed(url:reason:)``: nothing reached the upstream.
        case connectFailed
        /// ``UpstreamError/dnsFailed(url:reason:)``.
        case dnsFailed
        /// ``UpstreamError/timeout(url:)``.
        case timeout
        /// ``UpstreamError/upstreamClosed(url:reason:)``.
        case upstreamClosed
        /// ``UpstreamError/invalidResponse(url:reason:)``.
        case invalidResponse
        /// ``UpstreamError/transferFailed(url:code:reason:)``.
        case transferFailed

        static func of(_ error: any Error) -> RetryableError? {
            guard let code = (error as? UpstreamError)?.code else { return nil }
            return switch code {
            case .connectFailed: .connectFailed
            case .dnsFailed: .dnsFailed
            case .timeout: .timeout
            case .upstreamClosed: .upstreamClosed
            case .invalidResponse: .invalidResponse
            case .transferFailed: .transferFailed
            default: nil
            }
        }
    }

    /// Attempts in all, the first included (1: no retry).
    public var maxAttempts: Int
    /// The first backoff.
    public var initialBackoff: Duration
    /// The largest backoff.
    public var maxBackoff: Duration
    /// How much the backoff grows after each retry.
    public var backoffMultiplier: Double
    /// Response statuses that are retried (the last response is returned when attempts run out).
    public var retryableStatuses: Set<Int>
    /// Errors that are retried (the last error is thrown when attempts run out).
    public var retryableErrors: Set<RetryableError>
    /// Retry POST and PATCH too (only when the upstream makes them safe to repeat).
    public var retryNonIdempotent: Bool
    /// The time every attempt and wait together may take (nil: each attempt has its own timeout only).
    public var deadline: Duration?
    /// The shared budget that stops retries during an outage (nil: no throttling).
    public var throttle: RetryThrottle?

    /// A policy; by default 3 attempts, 50 ms growing twofold to 1 s, statuses 502, 503 and 504,
    /// connection failures, resets and timeouts.
    public init(maxAttempts: Int = 3, initialBackoff: Duration = .milliseconds(50), maxBackoff: Duration = .seconds(1),
                backoffMultiplier: Double = 2, retryableStatuses: Set<Int> = [502, 503, 504],
                retryableErrors: Set<RetryableError> = [.connectFailed, .upstreamClosed, .timeout],
                retryNonIdempotent: Bool = false, deadline: Duration? = nil, throttle: RetryThrottle? = nil) {
        self.maxAttempts = maxAttempts
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.backoffMultiplier = backoffMultiplier
        self.retryableStatuses = retryableStatuses
        self.retryableErrors = retryableErrors
        self.retryNonIdempotent = retryNonIdempotent
        self.deadline = deadline
        self.throttle = throttle
    }

    /// Why this policy cannot work, if it cannot.
    var problem: String? {
        if maxAttempts < 1 { return "retry policy: maxAttempts must be at least 1, got \(maxAttempts)" }
        if initialBackoff < .zero || maxBackoff < .zero { return "retry policy: backoffs must not be negative" }
        if !(backoffMultiplier >= 1) || !backoffMultiplier.isFinite { return "retry policy: backoffMultiplier must be a finite number >= 1" }
        if let deadline, deadline <= .zero { return "retry policy: deadline must be positive" }
        return nil
    }

    static let idempotentMethods: Set<String> = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]
}

/// gRPC's retry throttling: a token bucket shared by the requests that use it. Every attempt that
/// fails in a retryable way takes one token, every success gives back `tokenRatio`; while the bucket
/// holds half its tokens or fewer, nothing is retried.
public final class RetryThrottle: Sendable {
    /// The bucket's size (and its start).
    public let maxTokens: Double
    /// What a success gives back.
    public let tokenRatio: Double
    private let tokens: Mutex<Double>

    /// A bucket of `maxTokens` (gRPC allows up to 1000) refilled by `tokenRatio` per success.
    public init(maxTokens: Double = 10, tokenRatio: Double = 0.1) {
        self.maxTokens = max(1, maxTokens)
        self.tokenRatio = max(0, tokenRatio)
        tokens = Mutex(max(1, maxTokens))
    }

    /// The tokens in the bucket now.
    public var available: Double { tokens.locked { $0 } }

    func recordFailure() { tokens.locked { $0 = max(0, $0 - 1) } }
    /// Empties the bucket (as a run of failures would): no retry or hedge until successes refill it.
    public func drain() { tokens.locked { $0 = 0 } }
    func recordSuccess() { tokens.locked { $0 = min(maxTokens, $0 + tokenRatio) } }
    var allowsRetry: Bool { tokens.locked { $0 > maxTokens / 2 } }
}
