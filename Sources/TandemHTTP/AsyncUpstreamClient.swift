import Foundation
import HTTPTypes
import Logging
import ServiceLifecycle
import TandemCache
import TandemLoop
import Tracing

/// The async face of an ``UpstreamClient``: never blocks a thread.
public struct AsyncUpstreamClient: Sendable {
    let client: UpstreamClient
    var multi: CurlMulti { client.multi }

    /// Sends a request. Bad input is rejected before any I/O. A cancelled task ends at once with
    /// `CancellationError` and its transfer is removed from the multi handle. With a retry policy (the
    /// call's, else the client's ``UpstreamClientConfiguration/retryPolicy``) a retryable answer or error
    /// is tried again as the policy says; see ``RetryPolicy``. With ``UpstreamClientConfiguration/responseCaching``
    /// a GET is answered from the cache when RFC 9111 allows; see ``ResponseCaching``. With a hedging policy (the call's, else
    /// the client's when the call brings no retry policy) copies go out as ``HedgingPolicy`` says.
    ///
    /// A plain request (no span, response cache, retry or hedging policy) goes straight to one attempt:
    /// a task keeps the frame of every function on its path allocated while its request is in flight,
    /// so the features a call does not use stay in functions of their own, off its path.
    public func send(_ request: UpstreamRequest, retry: RetryPolicy? = nil, hedge: HedgingPolicy? = nil) async throws -> UpstreamResponse {
        if retry == nil && hedge == nil && client.plainRequests { return try await sendOnce(request) }
        return try await sendWithFeatures(request, retry: retry, hedge: hedge)
    }

    /// ``send(_:retry:hedge:)`` in a span when there is a tracer, through the response cache when
    /// there is one, under the retry or hedging policy.
    @inline(never)
    private func sendWithFeatures(_ request: UpstreamRequest, retry: RetryPolicy?, hedge: HedgingPolicy?) async throws -> UpstreamResponse {
        guard let tracer = client.tracer else { return try await sendRouted(request, retry: retry, hedge: hedge) }
        return try await HTTPTracing.span(tracer, request) { try await sendRouted(request, retry: retry, hedge: hedge) }
    }

    /// ``send(_:retry:hedge:)`` outside any span: through the response cache when there is one.
    private func sendRouted(_ request: UpstreamRequest, retry: RetryPolicy?, hedge: HedgingPolicy?) async throws -> UpstreamResponse {
        guard let caching = client.configuration.responseCaching else { return try await sendUncached(request, retry: retry, hedge: hedge) }
        if request.method == .get {
            return try await sendCaching(request, caching) { [self] r in try await sendUncached(r, retry: retry, hedge: hedge) }
        }
        let response = try await sendUncached(request, retry: retry, hedge: hedge)
        if ResponseCaching.invalidates(request.method) { await invalidateStored(after: response, to: request, caching) }
        return response
    }

    /// ``send(_:retry:hedge:)`` without the response cache.
    func sendUncached(_ request: UpstreamRequest, retry: RetryPolicy?, hedge: HedgingPolicy?) async throws -> UpstreamResponse {
        if let hedging = hedge ?? (retry == nil ? client.configuration.hedgingPolicy : nil) {
            return try await sendHedged(request, hedging)
        }
        guard let policy = retry ?? client.configuration.retryPolicy else { return try await sendOnce(request) }
        return try await sendRetrying(request, policy)
    }

    /// ``send(_:retry:hedge:)`` under a retry policy. A function of its own: its frame (the request,
    /// the last answer, the policy's state) is large, and a caller's task keeps every frame on its
    /// path allocated while a request is in flight, so calls without a policy do not carry it.
    @inline(never)
    private func sendRetrying(_ request: UpstreamRequest, _ policy: RetryPolicy) async throws -> UpstreamResponse {
        try request.validate()
        if let problem = policy.problem { throw UpstreamError.invalidRequest(reason: problem) }
        let clock = ContinuousClock()
        var attempts = RetryAttempts(policy: policy, method: request.method, now: clock.now)
        while true {
            var r = request
            if attempts.deadline != nil {
                r.timeout = attempts.timeout(request.timeout ?? client.configuration.requestTimeout, now: clock.now)
            }
            let result: Result<UpstreamResponse, any Error>
            do {
                result = .success(try await sendOnce(r))
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                result = .failure(error)
            }
            let outcome: RetryAttempts.Outcome = switch result {
            case .success(let response): .status(response.status.code)
            case .failure(let error): .error(error)
            }
            guard case .retry(let wait) = attempts.after(outcome, now: clock.now, jitter: Double.random(in: 0...1)) else {
                return try result.get()
            }
            try await Task.sleep(for: wait)
            client.metrics?.retried(request)
        }
    }

    /// Sends the copies of a hedged request; the first response wins and the others are cancelled.
    @inline(never)
    private func sendHedged(_ request: UpstreamRequest, _ policy: HedgingPolicy) async throws -> UpstreamResponse {
        try request.validate()
        if let problem = policy.problem { throw UpstreamError.invalidRequest(reason: problem) }
        policy.statistics.countRequest()
        let mayHedge = policy.hedgeNonIdempotent || RetryPolicy.idempotentMethods.contains(request.method.rawValue.uppercased())
        let copies = mayHedge ? policy.maxAttempts : 1
        let delay = policy.currentDelay
        let metrics = client.metrics
        return try await withThrowingTaskGroup(of: (copy: Int, result: Result<UpstreamResponse, any Error>)?.self) { group in
            for i in 0..<copies {
                group.addTask {
                    if i > 0 {
                        // A copy that is not needed by the time its turn comes is never sent.
                        do { try await Task.sleep(for: delay * i) } catch { return nil }
                        if let throttle = policy.throttle, !throttle.allowsRetry { return nil }
                        policy.statistics.countCopy()
                        metrics?.hedgedCopy(request)
                    }
                    let clock = ContinuousClock()
                    let start = clock.now
                    do {
                        let response = try await sendOnce(request)
                        policy.statistics.record(clock.now - start)
                        return (i, .success(response))
                    } catch {
                        return (i, .failure(error))
                    }
                }
            }
            var lastError: (any Error)?
            for try await outcome in group {
                switch outcome?.result {
                case .success(let response)?:
                    group.cancelAll()
                    policy.throttle?.recordSuccess()
                    metrics?.hedgeWon(request, byFirstCopy: outcome?.copy == 0)
                    return response
                case .failure(let error)?:
                    if !(error is CancellationError) { policy.throttle?.recordFailure() }
                    lastError = error
                case nil:
                    continue
                }
            }
            if Task.isCancelled { throw CancellationError() }
            throw lastError ?? UpstreamError.cancelled(url: request.url)
        }
    }

    /// One attempt: validates, then runs the transfer on the loop.
    func sendOnce(_ request: UpstreamRequest) async throws -> UpstreamResponse {
        try request.validate()
        HTTPTracing.attempts?.bump()
        guard let admitted = client.gate.enter() else { throw UpstreamError.clientShutDown }
        defer { client.gate.leave(admitted) }
        if let metrics = client.metrics { return try await transferMeasured(request, metrics) }
        return try await transfer(request)
    }

    /// ``transfer(_:)`` timed and counted in flight (a function of its own, off the unobserved path).
    @inline(never)
    private func transferMeasured(_ request: UpstreamRequest, _ metrics: UpstreamMetrics) async throws -> UpstreamResponse {
        try await metrics.measure(request) { try await transfer(request) }
    }

    /// Runs the transfer of a validated, admitted request on the loop.
    private func transfer(_ request: UpstreamRequest) async throws -> UpstreamResponse {
        let m = multi
        let transfer = Transfer(request: request, maxBody: m.configuration.maxBodyBytes, multi: m)
        try await withPromise(waiterLoop: m.loop) { (p: LoopPromise<Void>) in
            transfer.promise = p
            m.enqueueStart(transfer)
        }
        return transfer.response()
    }

    /// GET `url`.
    public func get(_ url: String, headers: HTTPFields = [:]) async throws -> UpstreamResponse {
        try await send(UpstreamRequest(.get, url, headers: headers))
    }

    /// POST `body` to `url`.
    public func post(_ url: String, body: [UInt8], headers: HTTPFields = [:]) async throws -> UpstreamResponse {
        try await send(UpstreamRequest(.post, url, headers: headers, body: body))
    }

    /// Sends the requests concurrently and returns one result per request, in input order.
    /// Per-request timeouts still apply; when `deadline` passes, requests still running are cancelled
    /// and reported as ``UpstreamError/deadlineExceeded(url:)``; `limit` caps how many run at once.
    public func fanOut(_ requests: [UpstreamRequest], deadline: Duration? = nil, limit: Int? = nil) async -> [Result<UpstreamResponse, UpstreamError>] {
        let results = await TandemLoop.fanOut(deadline: deadline, limit: limit, requests.map { r in { try await self.send(r) } })
        return zip(requests, results).map { request, result in
            result.mapError { error in
                switch error {
                case let e as UpstreamError: return e
                case is DeadlineExceeded: return .deadlineExceeded(url: request.url)
                case is CancellationError: return .cancelled(url: request.url)
                default: return .transferFailed(url: request.url, code: -1, reason: "\(error)")
                }
            }
        }
    }
}
