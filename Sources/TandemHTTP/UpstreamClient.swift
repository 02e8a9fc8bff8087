import Foundation
import HTTPTypes
import Logging
import ServiceLifecycle
import TandemCache
import TandemLoop
import Tracing

/// An upstream HTTP client on libcurl's multi interface, driven by an event loop (the shared one by
/// default), with a fan-out helper so that a page that calls five services costs the slowest call,
/// not the sum.
///
/// The multi handle keeps a connection cache, so keep-alive connections are reused across requests;
/// easy handles are reused too. ``async`` is the async face; the methods on the client itself block
/// (guarded: refused on a loop thread, and inside a Swift task by default).
public final class UpstreamClient: Sendable {
    /// Tandem's version, used in the default User-Agent.
    public static let version = "0.1.0"

    /// The first of ``loops`` (the only one for a client made on one loop).
    public let loop: any TandemEventLoop
    /// The loops that drive the transfers, each with a curl multi handle (and connection cache) of its own.
    public let loops: [any TandemEventLoop]
    /// The configuration.
    public let configuration: UpstreamClientConfiguration
    /// One multi handle per loop, in the order of ``loops``.
    let multis: [CurlMulti]
    private let picker: LoopPicker
    /// The multi handle for the next request: the one on the caller's loop when the caller runs on one
    /// of ``loops``, else the one the calling thread was given (see ``TandemEventLoopGroup``).
    var multi: CurlMulti { multis[picker.index()] }
    /// Counts requests in flight; closed by a shutdown.
    let gate = ShutdownGate()
    /// Cached responses being refreshed in the background (stale-while-revalidate).
    let backgroundRefreshes = BackgroundRefreshes()
    /// Where spans go (nil: no tracing).
    let tracer: (any Tracer)?
    /// No tracer, response cache, retry or hedging policy: a call that brings no policy of its own is
    /// one attempt.
    let plainRequests: Bool
    /// The async face (it keeps the client alive while in use).
    public var async: AsyncUpstreamClient { AsyncUpstreamClient(client: self) }

    /// Creates a client on `loop` alone when given, else on every loop of `loopGroup` (default:
    /// ``TandemLoop/EventLoops/group``, a loop per core). On several loops each keeps its own
    /// connections, and the connection limits of `configuration` (``UpstreamClientConfiguration/maxConnections``,
    /// ``UpstreamClientConfiguration/maxConnectionsPerHost``, ``UpstreamClientConfiguration/maxIdleConnections``)
    /// are shared out between the loops: each gets the limit divided by the number of loops, at least 1.
    /// Give at most one of `loop` and `loopGroup`.
    public init(loop: (any TandemEventLoop)? = nil, loopGroup: TandemEventLoopGroup? = nil,
                configuration: UpstreamClientConfiguration = UpstreamClientConfiguration()) {
        precondition(loop == nil || loopGroup == nil, "give UpstreamClient a loop or a loop group, not both")
        let ls = loop.map { [$0] } ?? (loopGroup ?? EventLoops.group).loops
        self.loop = ls[0]
        self.loops = ls
        self.configuration = configuration
        self.tracer = CacheTracing.resolve(configuration.tracer)
        self.plainRequests = tracer == nil && configuration.responseCaching == nil && configuration.retryPolicy == nil
            && configuration.hedgingPolicy == nil
        var perLoop = configuration
        if ls.count > 1 {
            func share(_ limit: Int) -> Int { limit > 0 ? max(1, limit / ls.count) : limit }
            perLoop.maxConnections = share(configuration.maxConnections)
            perLoop.maxConnectionsPerHost = share(configuration.maxConnectionsPerHost)
            perLoop.maxIdleConnections = share(configuration.maxIdleConnections)
        }
        self.multis = ls.map { CurlMulti(loop: $0, configuration: perLoop) }
        self.picker = LoopPicker(ls)
        if !configuration.verifyTLS {
            Logger(label: "tandem.http").warning(
                "TLS verification is off for this upstream client (verifyTLS = false): any server can pose as an https upstream")
        }
    }

    deinit {
        for m in multis { try? m.loop.execute { m.close() } }
    }

    /// Shuts the client down. From the call on, new requests fail at once with
    /// ``UpstreamError/clientShutDown``; requests in flight get `gracePeriod` to finish (each is also
    /// bounded by its own timeout); then every connection and curl handle is closed, which fails what
    /// is still in flight with ``UpstreamError/clientShutDown``. With no grace period (the default),
    /// requests in flight fail at once. Returns the requests that were still in flight when the
    /// grace period ended.
    @discardableResult
    public func shutdown(gracePeriod: Duration = .zero) async -> Int {
        gate.close()
        let left = await gate.drain(within: gracePeriod)
        await closeTransfers()
        return left
    }

    private func closeTransfers() async {
        for m in multis {
            _ = try? await withLoopPromise(on: m.loop) { (p: LoopPromise<Bool>) in
                m.close()
                p.succeed(true)
            }
        }
    }

    private func blocking<T: Sendable>(_ what: @autoclosure () -> String, file: String, line: Int,
                                       _ body: @escaping @Sendable () async throws -> T) throws -> T {
        try AsyncSafety.checkBlockingCall(what(), file: file, line: line)
        return try Bridge.blocking(body)
    }

    /// Sends a request and waits for the response (blocking).
    public func send(_ request: UpstreamRequest, file: String = #fileID, line: Int = #line) throws -> UpstreamResponse {
        let a = async
        return try blocking("HTTP \(request.method) \(request.url)", file: file, line: line) { try await a.send(request) }
    }

    /// GET `url` (blocking).
    public func get(_ url: String, headers: HTTPFields = [:], file: String = #fileID, line: Int = #line) throws -> UpstreamResponse {
        try send(UpstreamRequest(.get, url, headers: headers), file: file, line: line)
    }

    /// POST `body` to `url` (blocking).
    public func post(_ url: String, body: [UInt8], headers: HTTPFields = [:], file: String = #fileID, line: Int = #line) throws -> UpstreamResponse {
        try send(UpstreamRequest(.post, url, headers: headers, body: body), file: file, line: line)
    }

    /// Sends every request at once and waits for all (blocking); see ``AsyncUpstreamClient/fanOut(_:deadline:limit:)``.
    public func fanOut(_ requests: [UpstreamRequest], deadline: Duration? = nil, limit: Int? = nil,
                       file: String = #fileID, line: Int = #line) throws -> [Result<UpstreamResponse, UpstreamError>] {
        let a = async
        return try blocking("HTTP fan-out of \(requests.count) requests", file: file, line: line) { await a.fanOut(requests, deadline: deadline, limit: limit) }
    }

    /// Transfers in flight, idle easy handles kept for reuse, and easy handles created so far (summed
    /// over the loops).
    public func handleCounts() async throws -> (active: Int, idle: Int, created: Int) {
        var total = (active: 0, idle: 0, created: 0)
        for m in multis {
            let c = try await withLoopPromise(on: m.loop) { (p: LoopPromise<[Int]>) in
                let c = m.counts()
                p.succeed([c.active, c.idle, c.created])
            }
            total = (total.active + c[0], total.idle + c[1], total.created + c[2])
        }
        return total
    }
}

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
        let mayRetry = policy.retryNonIdempotent || RetryPolicy.idempotentMethods.contains(request.method.rawValue.uppercased())
        let clock = ContinuousClock()
        let deadline = policy.deadline.map { clock.now + $0 }
        var backoff = policy.initialBackoff
        var attempt = 1
        while true {
            var r = request
            if let deadline {
                let left = deadline - clock.now
                r.timeout = min(request.timeout ?? client.configuration.requestTimeout, left)
            }
            let result: Result<UpstreamResponse, any Error>
            do {
                result = .success(try await sendOnce(r))
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                result = .failure(error)
            }
            let retryable: Bool
            switch result {
            case .success(let response): retryable = policy.retryableStatuses.contains(response.status.code)
            case .failure(let error): retryable = RetryPolicy.RetryableError.of(error).map(policy.retryableErrors.contains) ?? false
            }
            guard retryable else {
                if case .success = result { policy.throttle?.recordSuccess() }
                return try result.get()
            }
            policy.throttle?.recordFailure()
            guard mayRetry, attempt < policy.maxAttempts, policy.throttle?.allowsRetry ?? true else { return try result.get() }
            // Full jitter: a random wait between 0 and the current backoff.
            let wait = backoff * Double.random(in: 0...1)
            if let deadline, clock.now + wait >= deadline { return try result.get() }
            try await Task.sleep(for: wait)
            backoff = min(backoff * policy.backoffMultiplier, policy.maxBackoff)
            attempt += 1
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
        return try await withThrowingTaskGroup(of: Result<UpstreamResponse, any Error>?.self) { group in
            for i in 0..<copies {
                group.addTask {
                    if i > 0 {
                        // A copy that is not needed by the time its turn comes is never sent.
                        do { try await Task.sleep(for: delay * i) } catch { return nil }
                        if let throttle = policy.throttle, !throttle.allowsRetry { return nil }
                        policy.statistics.countCopy()
                    }
                    let clock = ContinuousClock()
                    let start = clock.now
                    do {
                        let response = try await sendOnce(request)
                        policy.statistics.record(clock.now - start)
                        return .success(response)
                    } catch {
                        return .failure(error)
                    }
                }
            }
            var lastError: (any Error)?
            for try await outcome in group {
                switch outcome {
                case .success(let response)?:
                    group.cancelAll()
                    policy.throttle?.recordSuccess()
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
        guard client.gate.enter() else { throw UpstreamError.clientShutDown }
        defer { client.gate.leave() }
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

extension UpstreamClient: Service {
    /// Runs until the service group's graceful shutdown (or the task's cancellation), then shuts the
    /// client down with a 10 s grace period (see ``shutdown(gracePeriod:)``). The client works whether
    /// or not this ever runs. List it after its loop in a `ServiceGroup`, before the services that call it.
    public func run() async throws {
        try? await gracefulShutdown()
        await shutdown(gracePeriod: .seconds(10))
    }
}
