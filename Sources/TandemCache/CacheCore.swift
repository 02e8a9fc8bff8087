import Logging
import Synchronization
import Metrics
import Tracing
import TandemLoop

/// The operations the front records metrics for.
enum CacheOp: Int, CaseIterable, Sendable {
    case get, getMany, set, add, setMany, delete, deleteMany, incr, touch, hasKey, clear

    /// Whether the operation changes what is stored: a swallowed failure of one is a write that did
    /// not happen, so it is logged at warning (reads only at debug: a miss is Django's contract).
    var writes: Bool {
        switch self {
        case .get, .getMany, .hasKey: false
        case .set, .add, .setMany, .delete, .deleteMany, .incr, .touch, .clear: true
        }
    }

    var name: String {
        switch self {
        case .get: "get"
        case .getMany: "get_many"
        case .set: "set"
        case .add: "add"
        case .setMany: "set_many"
        case .delete: "delete"
        case .deleteMany: "delete_many"
        case .incr: "incr"
        case .touch: "touch"
        case .hasKey: "has_key"
        case .clear: "clear"
        }
    }
}

/// Counters and a latency timer per cache alias, created once and recorded once in the front.
///
/// The counters are `tandem_cache_*_total` with `alias`. The durations of a server backend's
/// operations are OpenTelemetry's `db.client.operation.duration`, with `db.system.name`,
/// `db.operation.name` (Django's name of the operation: `get`, `get_many`, ...), `tandem.cache.alias`
/// and `error.type` (``CacheError/kind`` when the call failed, else empty); an in-process backend's are
/// `tandem_cache_duration` with `alias` and `op`.
struct CacheMetrics: Sendable {
    let hits: Counter
    let misses: Counter
    let sets: Counter
    let deletes: Counter
    let errors: Counter
    /// Per operation: server failures that fail-open (`IGNORE_EXCEPTIONS`) or an open breaker turned
    /// into a miss, a `false` or a no-op instead of an error.
    let swallowed: [Counter]
    /// Per operation: the durations of calls (of successful ones for a server backend).
    let latency: [Metrics.Timer]
    /// A server backend's failed calls' durations, by operation and error kind, made on first use.
    private let failedLatency: FailedDurations?
    /// Clock reads cost; without a metrics backend there is nobody to report latency to.
    let timing: Bool

    init(alias: String, databaseSystem: String?, factory: (any MetricsFactory)?) {
        let f = factory ?? MetricsSystem.factory
        let dims = [("alias", alias)]
        hits = Counter(label: "tandem_cache_hits_total", dimensions: dims, factory: f)
        misses = Counter(label: "tandem_cache_misses_total", dimensions: dims, factory: f)
        sets = Counter(label: "tandem_cache_sets_total", dimensions: dims, factory: f)
        deletes = Counter(label: "tandem_cache_deletes_total", dimensions: dims, factory: f)
        errors = Counter(label: "tandem_cache_errors_total", dimensions: dims, factory: f)
        swallowed = CacheOp.allCases.map {
            Counter(label: "tandem_cache_fail_open_total", dimensions: dims + [("op", $0.name)], factory: f)
        }
        if let databaseSystem {
            let durations = FailedDurations(system: databaseSystem, alias: alias, factory: f)
            latency = CacheOp.allCases.map { durations.timer($0, errorType: "") }
            failedLatency = durations
        } else {
            latency = CacheOp.allCases.map {
                Metrics.Timer(label: "tandem_cache_duration", dimensions: dims + [("op", $0.name)], factory: f)
            }
            failedLatency = nil
        }
        timing = observedMetricsFactory(f) != nil
    }

    /// Records how long a call of `op` took since `start`; `error`: what it threw, if it failed.
    func recordDuration(_ op: CacheOp, since start: ContinuousClock.Instant, failed error: (any Error)? = nil) {
        let d = ContinuousClock.now - start
        let nanos = d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000
        if let error, let failedLatency {
            failedLatency.timer(op, errorType: (error as? CacheError)?.kind ?? "_OTHER").recordNanoseconds(nanos)
        } else {
            latency[op.rawValue].recordNanoseconds(nanos)
        }
    }

    /// `db.client.operation.duration` of one server backend, one timer per operation and error kind.
    final class FailedDurations: Sendable {
        private let system: String
        private let alias: String
        private let factory: any MetricsFactory
        private let failed = Mutex<[String: Metrics.Timer]>([:])

        init(system: String, alias: String, factory: any MetricsFactory) {
            self.system = system
            self.alias = alias
            self.factory = factory
        }

        /// The timer of `op` ending in `errorType` ("" for success: made once, by the caller).
        func timer(_ op: CacheOp, errorType: String) -> Metrics.Timer {
            func make() -> Metrics.Timer {
                Metrics.Timer(label: "db.client.operation.duration",
                              dimensions: [("db.system.name", system), ("db.operation.name", op.name),
                                           ("tandem.cache.alias", alias), ("error.type", errorType)],
                              factory: factory)
            }
            guard !errorType.isEmpty else { return make() }
            let key = "\(op.name) \(errorType)"
            return failed.locked { timers in
                if let t = timers[key] { return t }
                let t = make()
                timers[key] = t
                return t
            }
        }
    }
}

/// How the front resolved a ``CacheTimeout``.
enum ResolvedTimeout: Sendable {
    case expiry(CacheExpiry)
    /// 0 or negative: the key expires at once.
    case expired
}

/// The one implementation of the cache semantics that both faces share: key making and validation,
/// value coding, timeout rules, the async-safety guard and metrics. Each face method is a few lines
/// around one backend call.
final class CacheCore: Sendable {
    let alias: String
    let backend: any CacheBackend
    let keys: KeyMaker
    let defaultTimeout: CacheTimeout
    let codec: any CacheCodec
    /// `OPTIONS.SERIALIZER`.
    let serializer: ValueSerializer
    /// `OPTIONS.COMPRESSOR` (nil: values are stored uncompressed).
    let compressor: ValueCompressor?
    /// The backend keeps value kinds (the `"django"` format then writes pymemcache's flags).
    let keepsKinds: Bool
    let asyncUnsafePolicy: AsyncUnsafePolicy?
    let metrics: CacheMetrics
    let logger: Logger
    private let guarded: Bool
    /// Counts the calls in flight and refuses new ones once the cache is shut down.
    let gate = ShutdownGate()
    /// The `getOrSet` computations in progress, one per key.
    let flights = SingleFlights()
    /// Fail-open and breaker settings.
    let resilience: CacheResilience
    /// The breakers, one per server, when the settings ask for them.
    let breakers: CircuitBreakers?
    /// Where spans go (nil: no tracing).
    let tracer: (any Tracer)?
    /// When a swallowed write of each operation was last logged.
    let swallowedLog = RateLimitedLog(interval: .seconds(10))
    /// No tracer, breaker or latency timing: a call needs only the shutdown gate and the error count.
    private let plain: Bool

    /// The early-refresh beta a `getOrSet` call uses: the call's (0 or less: off), else the cache's.
    func earlyRefreshBeta(_ call: Double?) -> Double? {
        guard let beta = call ?? resilience.earlyRefreshBeta, beta > 0 else { return nil }
        return beta
    }

    /// The stampede lock a `getOrSet` call uses: `lock` nil follows the cache's setting; true uses it
    /// (or the default lock when the cache has none); false uses none.
    func stampedeLock(_ lock: Bool?) -> StampedeLock? {
        switch lock {
        case nil: return resilience.stampedeLock
        case true?: return resilience.stampedeLock ?? StampedeLock()
        case false?: return nil
        }
    }

    init(
        alias: String, backend: any CacheBackend, keyPrefix: String, version: Int, keyFunction: KeyFunction?,
        defaultTimeout: CacheTimeout, codec: any CacheCodec, serializer: ValueSerializer = .tandem,
        compressor: ValueCompressor? = nil, asyncUnsafePolicy: AsyncUnsafePolicy?,
        metricsFactory: (any MetricsFactory)?, resilience: CacheResilience = CacheResilience(), tracer: (any Tracer)? = nil
    ) {
        self.tracer = CacheTracing.resolve(tracer)
        self.resilience = resilience
        self.breakers = resilience.breakerThreshold > 0
            ? CircuitBreakers(threshold: resilience.breakerThreshold, cooldown: resilience.breakerCooldown,
                              metrics: BreakerMetrics.Factory.make(alias: alias, factory: metricsFactory)) : nil
        var logger = Logger(label: "tandem.cache")
        logger[metadataKey: "cache"] = "\(alias)"
        self.alias = alias
        self.backend = backend
        self.keys = KeyMaker(prefix: keyPrefix, defaultVersion: version, function: keyFunction,
                             strictness: backend.keyStrictness, logger: logger)
        self.defaultTimeout = defaultTimeout == .default ? .seconds(300) : defaultTimeout
        self.codec = codec
        self.serializer = serializer
        self.compressor = compressor
        self.keepsKinds = backend.keepsValueKinds
        self.asyncUnsafePolicy = asyncUnsafePolicy
        self.metrics = CacheMetrics(alias: alias, databaseSystem: backend.databaseSystem, factory: metricsFactory)
        self.logger = logger
        self.guarded = backend.waitsOnIO
        self.plain = self.tracer == nil && breakers == nil && !metrics.timing
    }

    // MARK: preparation shared by both faces

    /// `-delta` for `decr`/`decrVersion`; `Int.min` has no negation, so it is refused before any I/O.
    static func negated(_ delta: Int, key: String) throws -> Int {
        guard delta != .min else {
            throw CacheError.invalidArgument(key: key, reason: "cannot subtract Int.min: its negation does not fit in Int")
        }
        return -delta
    }

    /// `version + delta` for `incrVersion`, refused before any I/O when it overflows.
    static func shifted(version: Int, by delta: Int, key: String) throws -> Int {
        let (sum, overflow) = version.addingReportingOverflow(delta)
        guard !overflow else {
            throw CacheError.invalidArgument(key: key, reason: "version \(version) + \(delta) overflows Int")
        }
        return sum
    }

    /// The made key of `key`, validated. Out of line: inlined, the validation's temporaries made
    /// ``AsyncCache/get(_:version:)``'s async frame 96 bytes larger (see ``asyncGet(_:)``).
    @inline(never)
    func key(_ key: String, _ version: Int?) throws -> String {
        try keys.validated(key, version: version)
    }

    func keys(_ keys: [String], _ version: Int?) throws -> [(user: String, made: String)] {
        try keys.map { ($0, try self.keys.validated($0, version: version)) }
    }

    /// Makes, validates and encodes the items of a set-many.
    func encodeMany<V: CacheValue>(_ items: [String: V], _ version: Int?) throws
        -> ([(user: String, made: String)], [(key: String, value: StoredValue)]) {
        var ks: [(user: String, made: String)] = []
        var encoded: [(key: String, value: StoredValue)] = []
        ks.reserveCapacity(items.count)
        encoded.reserveCapacity(items.count)
        for (user, value) in items {
            let made = try keys.validated(user, version: version)
            ks.append((user, made))
            encoded.append((made, try encode(value, key: made)))
        }
        return (ks, encoded)
    }

    @inline(__always)
    func encode<V: CacheValue>(_ value: V, key: String) throws -> StoredValue {
        if serializer != .tandem {
            return try DjangoValueCoding.encode(value, flags: keepsKinds, compressor: compressor, json: serializer == .json, key: key)
        }
        let stored = try ValueCoding.encode(value, codec: codec, key: key)
        guard let compressor, stored.bytes.count > compressor.minimumLength, stored.kind != .integer, stored.kind != .null else { return stored }
        do {
            return StoredValue(bytes: try compressor.compress(stored.bytes), kind: stored.kind)
        } catch {
            throw CacheError.encodingFailed(key: key, type: String(describing: V.self), reason: "\(error)")
        }
    }

    /// Decodes a backend answer and counts the hit or miss.
    @inline(__always)
    func decode<V: CacheValue>(_ stored: StoredValue?, key: String) throws -> V? {
        guard let stored else {
            metrics.misses.increment()
            return nil
        }
        metrics.hits.increment()
        return try decodeStored(stored, key: key)
    }

    @inline(__always)
    private func decodeStored<V: CacheValue>(_ stored: StoredValue, key: String) throws -> V? {
        if serializer != .tandem {
            return try DjangoValueCoding.decode(V.self, from: stored, flags: keepsKinds, compressor: compressor, json: serializer == .json, key: key)
        }
        guard let compressor, stored.kind != .null else { return try ValueCoding.decode(V.self, from: stored, codec: codec, key: key) }
        let bytes: [UInt8]?
        do {
            bytes = try compressor.decompress(stored.bytes)
        } catch {
            throw CacheError.decodingFailed(key: key, type: String(describing: V.self), reason: "\(error)")
        }
        return try ValueCoding.decode(V.self, from: bytes.map { StoredValue(bytes: $0, kind: stored.kind) } ?? stored, codec: codec, key: key)
    }

    /// Decodes the answer of a get-many into the caller's keys, keeping only what exists.
    func decodeMany<V: CacheValue>(_ found: [String: StoredValue], _ keys: [(user: String, made: String)]) throws -> [String: V] {
        var out: [String: V] = [:]
        out.reserveCapacity(found.count)
        for (user, made) in keys {
            guard let stored = found[made] else { continue }
            if let v: V = try decodeStored(stored, key: made) { out[user] = v }
        }
        metrics.hits.increment(by: Int64(found.count))
        metrics.misses.increment(by: Int64(keys.count - found.count))
        return out
    }

    func resolve(_ timeout: CacheTimeout) -> ResolvedTimeout {
        switch timeout == .default ? defaultTimeout : timeout {
        case .never: return .expiry(.never)
        case .seconds(let s): return s > 0 ? .expiry(.after(seconds: s)) : .expired
        case .default: return .expiry(.after(seconds: 300))
        }
    }

    /// Applies the async-safety guard to a blocking call, on every backend: the guard judges where the
    /// call is made, not what the backend is, so that a view that passes on LocMem passes on Redis.
    /// `file` and `line` are the caller's, for the `.warn` policy's message.
    @inline(__always)
    func checkBlocking(_ operation: StaticString, file: String, line: Int) throws {
        if AsyncSafety.isPlainThread { return }
        try AsyncSafety.checkBlockingCall("cache '\(alias)' \(operation)", policy: asyncUnsafePolicy, file: file, line: line)
    }

    // MARK: shutdown

    /// Admits a call, or refuses it with ``CacheError/shutDown(_:)`` once a shutdown has begun. Calls
    /// to a backend that waits on I/O are counted, so that a shutdown can wait for them; an in-memory
    /// backend's calls end in microseconds, so they only check the flag (one load, no shared write
    /// that threads would fight over).
    /// - Returns: the gate's counter to hand to ``leave(_:)`` (nil for an in-memory backend).
    @inline(__always)
    private func enter() throws -> ShutdownGate.Stripe? {
        if guarded {
            guard let stripe = gate.enter() else { throw CacheError.shutDown("cache '\(alias)'") }
            return stripe
        } else if gate.isClosed {
            throw CacheError.shutDown("cache '\(alias)'")
        }
        return nil
    }

    @inline(__always)
    private func leave(_ stripe: ShutdownGate.Stripe?) {
        if let stripe { gate.leave(stripe) }
    }

    // MARK: recording

    /// Runs one backend call of `op` with the guard, the shutdown gate, the breaker and metrics.
    /// `key`: the made key the call works on (its server's breaker is the one consulted; nil, for calls
    /// on several keys or none, the backend-wide one). `fallback`: what the call returns instead of a
    /// server failure when the cache fails open (nil: this call never fails open).
    @inline(__always)
    func run<R>(_ op: CacheOp, key: String? = nil, fallback: R? = nil, _ body: () throws -> R) throws -> R {
        guard let tracer else { return try runUntraced(op, key: key, fallback: fallback, body) }
        return try CacheTracing.span(tracer, op, alias: alias, nearCache: backend.keepsNearCache) {
            try runUntraced(op, key: key, fallback: fallback, body)
        }
    }

    /// ``run(_:fallback:_:)`` for a read of one stored value (a miss when failing open). Not generic, so
    /// the hot path is specialized whatever type the caller decodes into.
    @inline(__always)
    func runRead(_ op: CacheOp, key: String, _ body: () throws -> StoredValue?) throws -> StoredValue? {
        try run(op, key: key, fallback: .some(nil), body)
    }

    /// The backend's async GET of the made key `k`, as ``runReadAsync(_:_:)`` runs it, with one
    /// suspension point on the plain path (no tracer, breaker or timing); the rest lives in
    /// ``asyncGetTraced(_:)``. A caller's task keeps every async frame on the path of a call in flight
    /// allocated, in slabs of 984 bytes: inlined into ``AsyncCache/get(_:version:)``, the two take
    /// 176 bytes of the slab instead of 256 as two frames, and a Redis GET's whole path fits in the
    /// task's first slab (a second slab was 1 KB more per call in flight).
    @inline(__always)
    func asyncGet(_ k: String) async throws -> StoredValue? {
        guard plain else { return try await asyncGetTraced(k) }
        let admitted = try enter()
        defer { leave(admitted) }
        do { return try await backend.asyncGet(k) } catch { return try failOpen(.get, error, .some(nil), breaker: nil) }
    }

    @inline(never)
    private func asyncGetTraced(_ k: String) async throws -> StoredValue? {
        try await runReadAsync(.get, key: k) { try await backend.asyncGet(k) }
    }

    /// ``runRead(_:_:)`` for the async face.
    @inline(__always)
    func runReadAsync(_ op: CacheOp, key: String, _ body: () async throws -> StoredValue?) async throws -> StoredValue? {
        try await runAsync(op, key: key, fallback: .some(nil), body)
    }

    /// ``run(_:fallback:_:)``'s work, outside any span.
    @inline(__always)
    private func runUntraced<R>(_ op: CacheOp, key: String?, fallback: R?, _ body: () throws -> R) throws -> R {
        let admitted = try enter()
        defer { leave(admitted) }
        guard let call = begin(key) else { return try failOpen(op, circuitOpen(), fallback, breaker: nil) }
        do { return succeeded(op, try body(), call) } catch { return try failed(op, error, fallback, call) }
    }

    /// A call past its server's breaker: the breaker, to tell how the call went, and when durations
    /// are measured, the call's start.
    private struct Call {
        let breaker: CircuitBreaker?
        let start: ContinuousClock.Instant?
    }

    /// Starts a call on `key`; nil when its server's breaker is open (the call is skipped).
    @inline(__always)
    private func begin(_ key: String?) -> Call? {
        let breaker = breaker(for: key)
        if let breaker, !breaker.admit() { return nil }
        return Call(breaker: breaker, start: metrics.timing ? ContinuousClock.now : nil)
    }

    /// A call that returned `r`: its duration (unless the near cache answered), and its breaker told.
    @inline(__always)
    private func succeeded<R>(_ op: CacheOp, _ r: R, _ call: Call) -> R {
        if let start = call.start, !answeredInProcess(r, op) { metrics.recordDuration(op, since: start) }
        return recorded(r, call.breaker)
    }

    /// A call that threw `error`: its duration, then fail-open decides (and tells the breaker).
    @inline(__always)
    private func failed<R>(_ op: CacheOp, _ error: any Error, _ fallback: R?, _ call: Call) throws -> R {
        if let start = call.start { metrics.recordDuration(op, since: start, failed: error) }
        return try failOpen(op, error, fallback, breaker: call.breaker)
    }

    /// The breaker of the server `key` lives on (the backend-wide one for nil or a backend that does not
    /// say); nil without breakers.
    @inline(__always)
    private func breaker(for key: String?) -> CircuitBreaker? {
        guard let breakers else { return nil }
        return breakers.breaker(for: key.flatMap { backend.breakerScope(forKey: $0) })
    }

    private func circuitOpen() -> CacheError { .circuitOpen(alias: alias) }

    /// ``run(_:fallback:_:)`` for the async face.
    @inline(__always)
    func runAsync<R>(_ op: CacheOp, key: String? = nil, fallback: R? = nil, _ body: () async throws -> R) async throws -> R {
        guard let tracer else { return try await runAsyncUntraced(op, key: key, fallback: fallback, body) }
        return try await CacheTracing.span(tracer, op, alias: alias, nearCache: backend.keepsNearCache) {
            try await runAsyncUntraced(op, key: key, fallback: fallback, body)
        }
    }

    @inline(__always)
    private func runAsyncUntraced<R>(_ op: CacheOp, key: String?, fallback: R?, _ body: () async throws -> R) async throws -> R {
        let admitted = try enter()
        defer { leave(admitted) }
        guard let call = begin(key) else { return try failOpen(op, circuitOpen(), fallback, breaker: nil) }
        do { return succeeded(op, try await body(), call) } catch { return try failed(op, error, fallback, call) }
    }

    /// A get the backend's near cache answered: not a server operation, so its duration is not one
    /// (the near cache counts its hits itself).
    @inline(__always)
    private func answeredInProcess<R>(_ r: R, _ op: CacheOp) -> Bool {
        op == .get && backend.keepsNearCache && (r as? StoredValue)?.servedFromNearCache == true
    }

    /// A call that reached the server and succeeded closes its server's breaker.
    @inline(__always)
    private func recorded<R>(_ r: R, _ breaker: CircuitBreaker?) -> R {
        breaker?.record(failed: false)
        return r
    }

    /// Counts the failure (in `breaker`, the breaker of the server the call reached, if any: only a
    /// failure that says the server is unreachable or unresponsive counts there); with fail-open, a
    /// server failure of a call that has a fallback returns the fallback instead of throwing.
    private func failOpen<R>(_ op: CacheOp, _ error: any Error, _ fallback: R?, breaker: CircuitBreaker?) throws -> R {
        let serverFailure = CacheResilience.isServerFailure(error)
        if let breaker, breaker.record(failed: CacheResilience.isUnreachable(error)) {
            logger.warning("circuit breaker opened: calls to this server skip it for the cool-down",
                           metadata: ["op": "\(op.name)", "server": "\(breaker.server ?? "all")", "error": "\(error)"])
        }
        let e = failed(op, error)
        if resilience.failOpen, serverFailure, let fallback {
            swallowed(op, error)
            return fallback
        }
        throw e
    }

    /// Records a server failure that failing open hid from the caller: counted per operation; a write,
    /// delete or touch is logged at warning, at most once per ``swallowedLog``'s interval per operation
    /// (with how many went unlogged since), a read at debug.
    private func swallowed(_ op: CacheOp, _ error: any Error) {
        metrics.swallowed[op.rawValue].increment()
        guard op.writes else {
            logger.debug("cache read failed; answered as a miss (fail-open)", metadata: ["op": "\(op.name)", "error": "\(error)"])
            return
        }
        guard let unlogged = swallowedLog.shouldLog(op.rawValue) else { return }
        logger.warning("cache write failed and was not applied (fail-open): the server still has what it had",
                       metadata: ["op": "\(op.name)", "error": "\(error)", "unlogged_since_last": "\(unlogged)"])
    }

    private func failed(_ op: CacheOp, _ error: any Error) -> any Error {
        metrics.errors.increment()
        logger.debug("cache operation failed", metadata: ["op": "\(op.name)", "error": "\(error)"])
        return error
    }

}

/// Says whether to log an event of a kind now: at most once per interval per kind, counting the events
/// it held back in between.
final class RateLimitedLog: Sendable {
    private struct Slot { var last: ContinuousClock.Instant?; var held = 0 }
    private let interval: Duration
    private let slots = Mutex<[Int: Slot]>([:])

    init(interval: Duration) { self.interval = interval }

    /// nil: do not log now. Otherwise log, and the number of events of `kind` held back since the last
    /// one logged.
    func shouldLog(_ kind: Int, now: ContinuousClock.Instant = .now) -> Int? {
        slots.locked { slots in
            var slot = slots[kind] ?? Slot()
            defer { slots[kind] = slot }
            if let last = slot.last, now - last < interval {
                slot.held += 1
                return nil
            }
            let held = slot.held
            slot = Slot(last: now, held: 0)
            return held
        }
    }
}
