import HTTPTypes

/// The retry decisions of one request under a ``RetryPolicy``, without I/O: after each attempt,
/// whether to return its answer or wait and try again, and how long each attempt may take.
package struct RetryAttempts: Sendable {
    /// What an attempt ended with.
    package enum Outcome {
        /// A response with this status.
        case status(Int)
        /// An error.
        case error(any Error)
    }

    /// What the client does after an attempt.
    package enum Next: Equatable, Sendable {
        /// Return this attempt's answer (or throw its error).
        case finish
        /// Wait this long, then try again.
        case retry(after: Duration)
    }

    private let policy: RetryPolicy
    /// The method may be sent again: idempotent, or the policy allows any.
    private let mayRetry: Bool
    /// When every attempt and wait together must be over; nil: each attempt has its own timeout only.
    package let deadline: ContinuousClock.Instant?
    /// The attempt under way, from 1.
    package private(set) var attempt = 1
    private var backoff: Duration

    /// The attempts of a request sent with `method`, starting `now`.
    package init(policy: RetryPolicy, method: HTTPRequest.Method, now: ContinuousClock.Instant) {
        self.policy = policy
        mayRetry = policy.retryNonIdempotent || RetryPolicy.idempotentMethods.contains(method.rawValue.uppercased())
        deadline = policy.deadline.map { now + $0 }
        backoff = policy.initialBackoff
    }

    /// The timeout of the next attempt: `requestTimeout`, cut to what the deadline leaves.
    package func timeout(_ requestTimeout: Duration, now: ContinuousClock.Instant) -> Duration {
        guard let deadline else { return requestTimeout }
        return min(requestTimeout, deadline - now)
    }

    /// Decides after an attempt that ended `now` with `outcome`. `jitter`, from 0 to 1, picks the wait
    /// within the current backoff (gRPC's full jitter). Every retryable failure takes a token from
    /// the policy's throttle and every success gives some back.
    package mutating func after(_ outcome: Outcome, now: ContinuousClock.Instant, jitter: Double) -> Next {
        let retryable = switch outcome {
        case .status(let code): policy.retryableStatuses.contains(code)
        case .error(let error): RetryPolicy.RetryableError.of(error).map(policy.retryableErrors.contains) ?? false
        }
        guard retryable else {
            if case .status = outcome { policy.throttle?.recordSuccess() }
            return .finish
        }
        policy.throttle?.recordFailure()
        guard mayRetry, attempt < policy.maxAttempts, policy.throttle?.allowsRetry ?? true else { return .finish }
        let wait = backoff * min(1, max(0, jitter))
        if let deadline, now + wait >= deadline { return .finish }
        backoff = min(backoff * policy.backoffMultiplier, policy.maxBackoff)
        attempt += 1
        return .retry(after: wait)
    }
}
