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
///
/// ## Metrics
/// Through swift-metrics (``UpstreamClientConfiguration/metricsFactory``, else the bootstrapped factory):
/// `http.client.request.duration` per request on the wire, with `http.request.method`,
/// `server.address`, `server.port`, `http.response.status_code` and `error.type` (an
/// ``UpstreamError/kind``, or the status of a 4xx or 5xx answer); `http.client.active_requests` per
/// server; `tandem.http.client.retries`, `tandem.http.client.hedged_copies` and
/// `tandem.http.client.hedge_wins` (`copy`: `first` or `later`); and
/// `tandem.http.client.cache.lookups` by `result` (`hit`, `stale`, `revalidated`, `miss`, `bypass`).
/// No label carries a path, a query or credentials.
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
    /// The client's metrics (nil: nobody observes them).
    let metrics: UpstreamMetrics?
    /// No tracer, response cache, retry or hedging policy: a call that brings no policy of its own is
    /// one attempt.
    let plainRequests: Bool
    /// The async face (it keeps the client alive while in use).
    public var async: AsyncUpstreamClient { AsyncUpstreamClient(client: self) }

    /// Creates a client on `loop` alone when given, else on every loop of `loopGroup` (default:
    /// `EventLoops.group`, a loop per core). On several loops each keeps its own
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
        self.metrics = UpstreamMetrics.make(configuration.metricsFactory)
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
    package func handleCounts() async throws -> (active: Int, idle: Int, created: Int) {
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
