import HTTPTypes
import TandemHTTP
import Testing

/// The retry policy's decisions, without an upstream: which answers are tried again, how long the
/// client waits, and when it stops.
struct RetryAttemptsTests {
    let start = ContinuousClock.now
    let refused = UpstreamError.connectFailed(url: "http://a/", reason: "refused")

    @Test func retryableAnswersAreTriedAgainUntilTheAttemptsRunOut() {
        let policy = RetryPolicy(maxAttempts: 3, initialBackoff: .milliseconds(100), maxBackoff: .milliseconds(150), backoffMultiplier: 2)
        var attempts = RetryAttempts(policy: policy, method: .get, now: start)
        #expect(attempts.after(.status(503), now: start, jitter: 1) == .retry(after: .milliseconds(100)))
        #expect(attempts.after(.error(refused), now: start, jitter: 1) == .retry(after: .milliseconds(150)), "grown, capped at maxBackoff")
        #expect(attempts.attempt == 3)
        #expect(attempts.after(.status(503), now: start, jitter: 1) == .finish, "the third attempt was the last")
    }

    @Test func theWaitIsAFractionOfTheBackoff() {
        var attempts = RetryAttempts(policy: RetryPolicy(initialBackoff: .milliseconds(100)), method: .get, now: start)
        #expect(attempts.after(.status(502), now: start, jitter: 0.25) == .retry(after: .milliseconds(25)))
        var none = RetryAttempts(policy: RetryPolicy(initialBackoff: .milliseconds(100)), method: .get, now: start)
        #expect(none.after(.status(502), now: start, jitter: 0) == .retry(after: .zero))
    }

    @Test func otherAnswersAreReturnedAsTheyAre() {
        var attempts = RetryAttempts(policy: RetryPolicy(), method: .get, now: start)
        #expect(attempts.after(.status(200), now: start, jitter: 1) == .finish)
        #expect(attempts.after(.status(500), now: start, jitter: 1) == .finish, "500 is not in the default statuses")
        #expect(attempts.after(.error(UpstreamError.invalidResponse(url: "u", reason: "r")), now: start, jitter: 1) == .finish)
        #expect(attempts.after(.error(CancellationError()), now: start, jitter: 1) == .finish)
        var dns = RetryAttempts(policy: RetryPolicy(retryableErrors: [.dnsFailed]), method: .get, now: start)
        #expect(dns.after(.error(UpstreamError.dnsFailed(url: "u", reason: "r")), now: start, jitter: 1) != .finish)
    }

    @Test func onlyIdempotentMethodsAreRetriedUnlessThePolicySaysSo() {
        var post = RetryAttempts(policy: RetryPolicy(), method: .post, now: start)
        #expect(post.after(.status(503), now: start, jitter: 1) == .finish)
        var allowed = RetryAttempts(policy: RetryPolicy(retryNonIdempotent: true), method: .post, now: start)
        #expect(allowed.after(.status(503), now: start, jitter: 1) != .finish)
        var put = RetryAttempts(policy: RetryPolicy(), method: .put, now: start)
        #expect(put.after(.status(503), now: start, jitter: 1) != .finish)
    }

    @Test func theDeadlineCutsTheLastAttemptAndStopsAWaitThatWouldPassIt() {
        let policy = RetryPolicy(maxAttempts: 5, initialBackoff: .milliseconds(400), deadline: .seconds(1))
        var attempts = RetryAttempts(policy: policy, method: .get, now: start)
        #expect(attempts.timeout(.seconds(5), now: start + .milliseconds(300)) == .milliseconds(700))
        #expect(attempts.timeout(.milliseconds(200), now: start) == .milliseconds(200))
        #expect(attempts.after(.status(503), now: start + .milliseconds(500), jitter: 1) == .retry(after: .milliseconds(400)))
        #expect(attempts.after(.status(503), now: start + .milliseconds(950), jitter: 1) == .finish, "the wait would pass the deadline")
        let open = RetryAttempts(policy: RetryPolicy(), method: .get, now: start)
        #expect(open.timeout(.seconds(5), now: start + .seconds(100)) == .seconds(5), "no deadline: the request's own timeout")
    }

    @Test func theThrottleStopsRetriesWhenTooManyAttemptsFail() {
        let throttle = RetryThrottle(maxTokens: 4, tokenRatio: 1)
        let policy = RetryPolicy(maxAttempts: 10, throttle: throttle)
        var attempts = RetryAttempts(policy: policy, method: .get, now: start)
        #expect(attempts.after(.status(503), now: start, jitter: 0) != .finish, "4 -> 3 tokens: still above half")
        #expect(attempts.after(.status(503), now: start, jitter: 0) == .finish, "3 -> 2: half or fewer, no retry")
        #expect(throttle.available == 2)
        var next = RetryAttempts(policy: policy, method: .get, now: start)
        #expect(next.after(.status(200), now: start, jitter: 0) == .finish)
        #expect(throttle.available == 3, "a success gives a token back")
    }
}
