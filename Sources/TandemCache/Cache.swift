import CoreMetrics
import TandemLoop
import Tracing

#if canImport(Glibc)
import Glibc
#endif

/// A cache with Django's semantics. Its methods block the calling thread (for LocMem and Dummy they
/// never wait); ``async`` gives the same methods as `async` functions that never block a thread.
///
/// Every key-taking method also takes `version:` (the cache's VERSION when nil). Keys are made as
/// `"\(KEY_PREFIX):\(version):\(key)"` unless a key function is configured.
///
/// Every blocking call is checked by the async-safety guard, whatever the backend (so that moving a
/// cache from LocMem to Redis never needs a code change): on an event-loop thread it throws
/// `TandemError.blockingCallOnEventLoop`; inside a Swift task it follows the
/// cache's policy (`.error` by default: use ``async`` there). The `file` and `line` parameters name the
/// caller in the guard's warnings; leave them to their defaults.
public final class Cache: Sendable {
    let core: CacheCore

    /// The alias this cache is registered under.
    public var alias: String { core.alias }
    /// The async face: the same operations, `async`, never blocking a thread.
    public let async: AsyncCache
    /// The backend behind this cache.
    @_spi(Backend) public var backend: any CacheBackend { core.backend }

    /// Where this cache stores values, as a URL without secrets: `redis://127.0.0.1:6379/0`,
    /// `memcached://10.0.0.1:11211,10.0.0.2:11211`, `locmem://name`, `dummy://`.
    public var backendDescription: String { core.backend.backendDescription }

    /// Creates a cache over a backend. Usually you get caches from `Caches` instead.
    /// - Parameters:
    ///   - alias: the name used in logs, metrics and errors.
    ///   - backend: where values are stored.
    ///   - timeout: the default timeout (Django's TIMEOUT, 300 s unless set).
    ///   - keyPrefix: Django's KEY_PREFIX.
    ///   - version: Django's VERSION.
    ///   - keyFunction: replaces the default key making.
    ///   - codec: encodes values that are not stored natively (JSON by default), in the `.tandem` format.
    ///   - serializer: how values become stored bytes (`OPTIONS.SERIALIZER`; Tandem's own format by default).
    ///   - compressor: compresses stored values as django-redis does (`OPTIONS.COMPRESSOR`; none by default).
    ///   - asyncUnsafePolicy: the guard's policy for this cache (nil: the process-wide one).
    ///   - metricsFactory: where counters and timers go (nil: `MetricsSystem.factory`).
    ///   - resilience: fail-open and circuit-breaker settings (off by default).
    ///   - tracer: where `cache.<operation>` spans go (nil: the bootstrapped tracer, if any).
    @_spi(Backend) public init(
        alias: String = "default", backend: any CacheBackend, timeout: CacheTimeout = .seconds(300),
        keyPrefix: String = "", version: Int = 1, keyFunction: KeyFunction? = nil,
        codec: any CacheCodec = JSONCacheCodec(), serializer: ValueSerializer = .tandem, compressor: ValueCompressor? = nil,
        asyncUnsafePolicy: AsyncUnsafePolicy? = nil,
        metricsFactory: (any MetricsFactory)? = nil, resilience: CacheResilience = CacheResilience(),
        tracer: (any Tracer)? = nil
    ) {
        core = CacheCore(alias: alias, backend: backend, keyPrefix: keyPrefix, version: version,
                         keyFunction: keyFunction, defaultTimeout: timeout, codec: codec, serializer: serializer, compressor: compressor,
                         asyncUnsafePolicy: asyncUnsafePolicy, metricsFactory: metricsFactory, resilience: resilience,
                         tracer: tracer)
        self.async = AsyncCache(core: core)
    }

    /// How this cache turns values into stored bytes (`OPTIONS.SERIALIZER`).
    public var serializer: ValueSerializer { core.serializer }

    /// The final key that `key` is stored under at `version` (made, not validated).
    public func makeKey(_ key: String, version: Int? = nil) -> String { core.keys.make(key, version: version) }

    /// Returns the value of `key`, or nil when it is missing. Ask for `V?` to tell a stored nil
    /// (`.some(nil)`) from a miss (`nil`).
    public func get<V: CacheValue>(_ key: String, version: Int? = nil, file: String = #fileID, line: Int = #line) throws -> V? {
        try core.checkBlocking("get", file: file, line: line)
        let k = try core.key(key, version)
        return try core.decode(try core.runRead(.get, key: k) { try core.backend.get(k) }, key: k)
    }

    /// Returns the value of `key`, or `default` when it is missing.
    public func get<V: CacheValue>(_ key: String, default defaultValue: V, version: Int? = nil, file: String = #fileID, line: Int = #line) throws -> V {
        try get(key, version: version, file: file, line: line) ?? defaultValue
    }

    /// Stores `value` under `key`. A timeout of 0 or less stores nothing (and removes an old value).
    public func set<V: CacheValue>(_ key: String, _ value: V, timeout: CacheTimeout = .default, version: Int? = nil, file: String = #fileID, line: Int = #line) throws {
        try core.checkBlocking("set", file: file, line: line)
        let k = try core.key(key, version)
        let v = try core.encode(value, key: k)
        try core.run(.set, key: k, fallback: ()) {
            switch core.resolve(timeout) {
            case .expired: _ = try core.backend.delete(k)
            case .expiry(let e): _ = try core.backend.set(k, v, expiry: e, mode: .set)
            }
            core.metrics.sets.increment()
        }
    }

    /// Stores `value` only if `key` does not exist. Returns whether it stored (with a timeout of 0 or
    /// less: whether the key was free; nothing is stored).
    @discardableResult
    public func add<V: CacheValue>(_ key: String, _ value: V, timeout: CacheTimeout = .default, version: Int? = nil, file: String = #fileID, line: Int = #line) throws -> Bool {
        try core.checkBlocking("add", file: file, line: line)
        let k = try core.key(key, version)
        let v = try core.encode(value, key: k)
        return try core.run(.add, key: k, fallback: false) {
            switch core.resolve(timeout) {
            case .expired: return try !core.backend.hasKey(k)
            case .expiry(let e): return try core.backend.set(k, v, expiry: e, mode: .add)
            }
        }
    }

    /// Returns the value of `key`; when missing, computes `makeDefault()`, adds it and re-reads, so that
    /// when another caller stored a value first, that value wins (Django's race-safe `get_or_set`).
    ///
    /// Single flight: concurrent callers of one key on this cache, in either face, run the producer
    /// once; the others wait and share its value, or its error. The cache is checked again inside the
    /// flight. A leader whose task is cancelled fails only itself: a waiter then leads with its own
    /// producer.
    ///
    /// Across processes: with a stampede lock (`lock: true`, or the cache's `STAMPEDE_LOCK_TIMEOUT`
    /// setting; see ``StampedeLock``) the leader first takes a short lock in the backend, so that many
    /// processes compute a key once.
    public func getOrSet<V: CacheValue>(
        _ key: String, timeout: CacheTimeout = .default, version: Int? = nil, lock: Bool? = nil,
        earlyRefresh: Double? = nil, file: String = #fileID, line: Int = #line, _ makeDefault: () throws -> V
    ) throws -> V {
        try core.checkBlocking("get_or_set", file: file, line: line)
        let made = try core.key(key, version)
        var procedure = GetOrSet<V>(core: core, made: made, timeout: timeout, beta: core.earlyRefreshBeta(earlyRefresh),
                                    lock: core.stampedeLock(lock), waiterCancelled: .joinAgain)
        var step = procedure.start()
        do {
            while true {
                switch step {
                case .readWithMetadata(let made, let metaKey):
                    step = try procedure.readWithMetadata(try core.run(.getMany, key: made, fallback: [:]) { try core.backend.getMany([made, metaKey]) })
                case .read:
                    step = procedure.read(try get(key, version: version, file: file, line: line))
                case .joinFlight:
                    step = procedure.joined(core.flights.join(made))
                case .wait(let flight):
                    step = try procedure.flightEnded(flight.waitBlocking())
                case .readShared:
                    step = try procedure.readShared(try core.runRead(.get, key: made) { try core.backend.get(made) })
                case .takeLock(let lockKey, let token, let seconds):
                    step = procedure.lockTaken((try? core.run(.add, key: lockKey, fallback: true) {
                        try core.backend.set(lockKey, token, expiry: .after(seconds: seconds), mode: .add)
                    }) ?? true)
                case .sleep(let interval):
                    usleep(UInt32(clamping: interval.components.seconds * 1_000_000 + interval.components.attoseconds / 1_000_000_000_000))
                    step = procedure.slept()
                case .produce:
                    let clock = ContinuousClock()
                    let start = clock.now
                    let fresh = try makeDefault()
                    step = try procedure.produced(fresh, took: clock.now - start)
                case .store(let value, let mode, let expiry):
                    step = procedure.stored(try core.run(mode == .set ? .set : .add, key: made, fallback: false) {
                        try core.backend.set(made, value, expiry: expiry, mode: mode)
                    })
                case .storeMetadata(let metaKey, let meta, let expiry):
                    _ = try? core.backend.set(metaKey, meta, expiry: expiry, mode: .set)
                    step = procedure.metadataStored()
                case .add(let fresh):
                    try add(key, fresh, timeout: timeout, version: version, file: file, line: line)
                    step = procedure.added()
                case .releaseLock(let held):
                    core.release(held)
                    step = procedure.released()
                case .finish(let flight, let outcome, let value):
                    core.flights.finish(made, flight, outcome)
                    return value
                case .done(let value):
                    return value
                }
            }
        } catch {
            let (held, flight, outcome) = procedure.abandon(error, cancelled: false)
            if let held { core.release(held) }
            if let flight { core.flights.finish(made, flight, outcome) }
            throw error
        }
    }

    /// Returns the values of the keys that exist (a stored nil included when `V` is optional).
    public func getMany<V: CacheValue>(_ keys: [String], version: Int? = nil, file: String = #fileID, line: Int = #line) throws -> [String: V] {
        try core.checkBlocking("get_many", file: file, line: line)
        let ks = try core.keys(keys, version)
        return try core.run(.getMany, fallback: [:]) { try core.decodeMany(try core.backend.getMany(ks.map(\.made)), ks) }
    }

    /// Stores every item; returns the keys that could not be stored (only memcached can fail).
    @discardableResult
    public func setMany<V: CacheValue>(_ items: [String: V], timeout: CacheTimeout = .default, version: Int? = nil, file: String = #fileID, line: Int = #line) throws -> [String] {
        try core.checkBlocking("set_many", file: file, line: line)
        let (ks, encoded) = try core.encodeMany(items, version)
        return try core.run(.setMany, fallback: ks.map(\.user)) {
            core.metrics.sets.increment(by: Int64(encoded.count))
            switch core.resolve(timeout) {
            case .expired:
                try core.backend.deleteMany(encoded.map(\.key))
                return []
            case .expiry(let e):
                let failed = Set(try core.backend.setMany(encoded, expiry: e))
                return ks.filter { failed.contains($0.made) }.map(\.user)
            }
        }
    }

    /// Deletes `key`; returns whether it existed.
    ///
    /// On a cache that fails open (`IGNORE_EXCEPTIONS`, or an open circuit breaker) a server failure
    /// returns `false`, counted and logged at warning, and the key stays on the server. Pass
    /// `failOpen: false` for a delete that must take effect (a logout, a lock release, an
    /// invalidation): the failure is then thrown as on any other cache.
    @discardableResult
    public func delete(_ key: String, version: Int? = nil, failOpen: Bool = true, file: String = #fileID, line: Int = #line) throws -> Bool {
        try core.checkBlocking("delete", file: file, line: line)
        let k = try core.key(key, version)
        return try core.run(.delete, key: k, fallback: failOpen ? false : nil) {
            core.metrics.deletes.increment()
            return try core.backend.delete(k)
        }
    }

    /// Deletes every key.
    public func deleteMany(_ keys: [String], version: Int? = nil, file: String = #fileID, line: Int = #line) throws {
        try core.checkBlocking("delete_many", file: file, line: line)
        let ks = try core.keys(keys, version)
        try core.run(.deleteMany, fallback: ()) {
            core.metrics.deletes.increment(by: Int64(ks.count))
            try core.backend.deleteMany(ks.map(\.made))
        }
    }

    /// Adds `delta` to the integer stored under `key`, atomically where the backend is, and returns
    /// the new value. Missing key: ``CacheError/missingKey(_:)``; not an integer: ``CacheError/notAnInteger(key:)``.
    @discardableResult
    public func incr(_ key: String, by delta: Int = 1, version: Int? = nil, file: String = #fileID, line: Int = #line) throws -> Int {
        try core.checkBlocking("incr", file: file, line: line)
        let k = try core.key(key, version)
        return Int(try core.run(.incr, key: k) { try core.backend.incr(k, by: Int64(delta)) })
    }

    /// Subtracts `delta`; see ``incr(_:by:version:file:line:)``.
    @discardableResult
    public func decr(_ key: String, by delta: Int = 1, version: Int? = nil, file: String = #fileID, line: Int = #line) throws -> Int {
        try incr(key, by: try CacheCore.negated(delta, key: key), version: version, file: file, line: line)
    }

    /// Sets a new timeout on `key`; returns whether it existed. A timeout of 0 or less expires it now.
    @discardableResult
    public func touch(_ key: String, timeout: CacheTimeout = .default, version: Int? = nil, file: String = #fileID, line: Int = #line) throws -> Bool {
        try core.checkBlocking("touch", file: file, line: line)
        let k = try core.key(key, version)
        return try core.run(.touch, key: k, fallback: false) {
            switch core.resolve(timeout) {
            case .expired: return try core.backend.delete(k)
            case .expiry(let e): return try core.backend.touch(k, expiry: e)
            }
        }
    }

    /// Returns whether `key` exists (a stored nil counts).
    public func hasKey(_ key: String, version: Int? = nil, file: String = #fileID, line: Int = #line) throws -> Bool {
        try core.checkBlocking("has_key", file: file, line: line)
        let k = try core.key(key, version)
        return try core.run(.hasKey, key: k, fallback: false) { try core.backend.hasKey(k) }
    }

    /// Moves `key` from `version` to `version + delta` and returns the new version.
    /// Missing key: ``CacheError/missingKey(_:)``.
    @discardableResult
    public func incrVersion(_ key: String, by delta: Int = 1, version: Int? = nil, file: String = #fileID, line: Int = #line) throws -> Int {
        try core.checkBlocking("incr_version", file: file, line: line)
        let from = version ?? core.keys.defaultVersion
        let old = try core.key(key, from)
        let to = try CacheCore.shifted(version: from, by: delta, key: key)
        let new = try core.key(key, to)
        guard let value = try core.run(.get, key: old, { try core.backend.get(old) }) else { throw CacheError.missingKey(key) }
        try core.run(.set) {
            if case .expiry(let e) = core.resolve(.default) { _ = try core.backend.set(new, value, expiry: e, mode: .set) }
            _ = try core.backend.delete(old)
        }
        return to
    }

    /// Moves `key` from `version` to `version - delta`; see ``incrVersion(_:by:version:file:line:)``.
    @discardableResult
    public func decrVersion(_ key: String, by delta: Int = 1, version: Int? = nil, file: String = #fileID, line: Int = #line) throws -> Int {
        try incrVersion(key, by: try CacheCore.negated(delta, key: key), version: version, file: file, line: line)
    }

    /// Removes everything from the backend (for Redis: FLUSHDB of its database, as Django does).
    public func clear(file: String = #fileID, line: Int = #line) throws {
        try core.checkBlocking("clear", file: file, line: line)
        try core.run(.clear) { try core.backend.clear() }
    }

    /// Releases the backend's connections. The cache can still be used; it reconnects.
    public func close() { core.backend.close() }

    /// Shuts the cache down gracefully. From the call on, new calls in either face fail at once with
    /// ``CacheError/shutDown(_:)``; calls already in flight get `gracePeriod` to finish (each is also
    /// bounded by the backend's own command timeout); then the connections are closed and the
    /// backend's threads end, which fails whatever is still in flight with a typed error. Returns the
    /// number of calls that were still in flight when the grace period ended (0 when all finished).
    /// Calling it again returns at once. ``Caches`` does this for every cache.
    @discardableResult
    public func shutdown(gracePeriod: Duration = .seconds(10)) async -> Int {
        let first = !core.gate.isClosed
        core.gate.close()
        let left = await core.gate.drain(within: first ? gracePeriod : .zero)
        if first { await core.backend.shutdown() }
        return left
    }

    /// True once ``shutdown(gracePeriod:)`` has begun.
    public var isShutDown: Bool { core.gate.isClosed }
}
