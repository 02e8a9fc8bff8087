import CoreMetrics
import Synchronization
import TandemLoop

/// What the upstream client reports through swift-metrics, named after OpenTelemetry's HTTP client
/// conventions (`http.client.*`) where one exists, `tandem.http.client.*` where none does:
///
/// - `http.client.request.duration` (timer): every request sent on the wire (each retry and hedged
///   copy is one), with `http.request.method`, `server.address`, `server.port`, and
///   `http.response.status_code` when an answer came or `error.type` when none did (the
///   ``UpstreamError`` case, `cancelled` for a cancelled task); a 4xx or 5xx answer also carries
///   `error.type` set to its status, as the conventions ask. A label that does not apply is empty
///   (every series of a name has the same label names, as Prometheus requires).
/// - `http.client.active_requests` (meter): requests on the wire now, per `server.address` and `server.port`.
/// - `tandem.http.client.retries` (counter): attempts a retry policy sent again, per method and server.
/// - `tandem.http.client.hedged_copies` (counter): extra copies a hedging policy sent, per method and
///   server; `tandem.http.client.hedge_wins` (counter) says which answered first (`copy`: `first` or `later`).
/// - `tandem.http.client.cache.lookups` (counter): GETs through the response cache by `result`:
///   `hit` (fresh), `stale` (served stale while it is refreshed, or because the upstream failed),
///   `revalidated` (a 304 renewed the stored answer), `miss` (fetched), `bypass` (a range request
///   or `Cache-Control: no-store`, which the cache does not serve).
///
/// No label carries a path, a query or credentials: a server is its host and port.
final class UpstreamMetrics: Sendable {
    private let factory: any MetricsFactory
    private let handles = Mutex<Handles>(Handles())

    private struct Handles {
        var durations: [DurationKey: Timer] = [:]
        var active: [Server: Meter] = [:]
        var counters: [CounterKey: Counter] = [:]
    }

    struct Server: Hashable, Sendable {
        var host: String
        var port: Int
    }

    private struct DurationKey: Hashable {
        var method: String
        var server: Server
        /// The status, or 0 when none came.
        var status: Int
        var error: String?
    }

    private struct CounterKey: Hashable {
        var label: String
        var dimensions: [String]
    }

    /// Metrics on `factory` (nil: the factory bootstrapped with `MetricsSystem`); nil when that is the
    /// no-op factory, so that a client nobody observes reads no clock and takes no lock.
    static func make(_ factory: (any MetricsFactory)?) -> UpstreamMetrics? {
        observedMetricsFactory(factory).map { UpstreamMetrics($0) }
    }

    private init(_ factory: any MetricsFactory) { self.factory = factory }

    /// Runs one attempt on the wire, timing it and counting it in flight.
    func measure(_ request: UpstreamRequest, _ attempt: () async throws -> UpstreamResponse) async throws -> UpstreamResponse {
        let method = request.method.rawValue
        let server = UpstreamMetrics.server(of: request.url)
        let active = handles.locked { h in
            if let m = h.active[server] { return m }
            let m = Meter(label: "http.client.active_requests", dimensions: Self.dimensions(server), factory: factory)
            h.active[server] = m
            return m
        }
        active.increment()
        defer { active.decrement() }
        let clock = ContinuousClock()
        let start = clock.now
        do {
            let response = try await attempt()
            let code = response.status.code
            timer(DurationKey(method: method, server: server, status: code, error: code >= 400 ? String(code) : nil))
                .recordNanoseconds(Self.nanoseconds(clock.now - start))
            return response
        } catch {
            timer(DurationKey(method: method, server: server, status: 0, error: Self.errorType(error)))
                .recordNanoseconds(Self.nanoseconds(clock.now - start))
            throw error
        }
    }

    private func timer(_ key: DurationKey) -> Timer {
        handles.locked { h in
            if let t = h.durations[key] { return t }
            // Every series of one name has the same label names (Prometheus refuses a mix): a label
            // that does not apply is empty, which Prometheus treats as absent.
            let dims = [("http.request.method", key.method)] + Self.dimensions(key.server)
                + [("http.response.status_code", key.status == 0 ? "" : String(key.status)), ("error.type", key.error ?? "")]
            let t = Timer(label: "http.client.request.duration", dimensions: dims, factory: factory)
            h.durations[key] = t
            return t
        }
    }

    /// A retry policy sends `request` again.
    func retried(_ request: UpstreamRequest) {
        counter("tandem.http.client.retries", request).increment()
    }

    /// A hedging policy sends another copy of `request`.
    func hedgedCopy(_ request: UpstreamRequest) {
        counter("tandem.http.client.hedged_copies", request).increment()
    }

    /// A hedged request was answered, by its first copy or a later one.
    func hedgeWon(_ request: UpstreamRequest, byFirstCopy: Bool) {
        counter("tandem.http.client.hedge_wins", request, [("copy", byFirstCopy ? "first" : "later")]).increment()
    }

    /// What the response cache did with a GET.
    enum CacheResult: String, Sendable {
        case hit, stale, revalidated, miss, bypass
    }

    func cacheLookup(_ result: CacheResult) {
        counter("tandem.http.client.cache.lookups", nil, [("result", result.rawValue)]).increment()
    }

    private func counter(_ label: String, _ request: UpstreamRequest?, _ extra: [(String, String)] = []) -> Counter {
        var dims: [(String, String)] = []
        if let request {
            dims.append(("http.request.method", request.method.rawValue))
            dims += Self.dimensions(UpstreamMetrics.server(of: request.url))
        }
        dims += extra
        let key = CounterKey(label: label, dimensions: dims.flatMap { [$0.0, $0.1] })
        return handles.locked { h in
            if let c = h.counters[key] { return c }
            let c = Counter(label: label, dimensions: dims, factory: factory)
            h.counters[key] = c
            return c
        }
    }

    private static func dimensions(_ server: Server) -> [(String, String)] {
        [("server.address", server.host), ("server.port", String(server.port))]
    }

    private static func nanoseconds(_ d: Duration) -> Int64 {
        let (s, atto) = d.components
        return s.multipliedReportingOverflow(by: 1_000_000_000).overflow ? .max : s * 1_000_000_000 + atto / 1_000_000_000
    }

    /// `error.type` of a request that got no answer.
    static func errorType(_ error: any Error) -> String {
        switch error {
        case is CancellationError: return "cancelled"
        case let e as UpstreamError: return e.kind
        default: return "_OTHER"
        }
    }

    /// The host (lower-cased, without brackets) and port of an http or https URL that validated:
    /// no user, path, query or fragment.
    static func server(of url: String) -> Server {
        var rest = Substring(url)
        var port = 80
        if let r = rest.range(of: "://") {
            if rest[..<r.lowerBound].lowercased() == "https" { port = 443 }
            rest = rest[r.upperBound...]
        }
        if let end = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) { rest = rest[..<end] }
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        var host = rest
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":"), let p = Int(after.dropFirst()) { port = p }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            if let p = Int(rest[rest.index(after: colon)...]) { port = p }
        }
        return Server(host: host.lowercased(), port: port)
    }
}
