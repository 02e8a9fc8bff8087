import CMemcached
@_spi(Backend) import TandemCache
import TandemLoop

/// memcached through libmemcached, Django's memcached semantics.
///
/// - LOCATION: `host:port`, `unix:/path`, a list, or a `;`/`,`-separated string. Keys are spread over
///   the servers by consistent hashing (ketama) unless `CONSISTENT_HASHING` is false.
/// - OPTIONS: `BINARY_PROTOCOL` (false), `TCP_NODELAY` (true), `CONNECT_TIMEOUT` and `POLL_TIMEOUT`
///   (s, 1), `POOL_SIZE` (blocking handles, 16), `POOL_TIMEOUT` (s to wait for a handle, 1),
///   `ASYNC_WORKERS` (2), `REMOVE_FAILED_SERVERS` (true) with `RETRY_TIMEOUT` (s, 2),
///   `USERNAME`/`PASSWORD` (SASL; binary protocol only).
/// - Keys are validated strictly before any I/O (``CacheError/invalidKey(key:reason:)``).
/// - Timeouts over 30 days are sent as absolute Unix time; `.never` as 0; fractions round up.
/// - A value over the server's item size limit fails with ``CacheError/valueTooLarge(key:size:limit:)``
///   and deletes the key's old value. `incr`/`decr` use memcached's own atomic commands; memcached
///   never goes below 0. The value's type tag is kept in the item flags.
/// - `clear()` is flush_all on every server: every key there, not only this cache's prefix.
/// - Blocking face: the calling thread borrows a pooled handle and does the I/O. Async face: the
///   event loop, speaking memcached's meta protocol on connections the loop owns (one per server,
///   requests of one loop turn in one write, keys placed by libmemcached's own distribution so both
///   faces agree). With `USERNAME`/`PASSWORD` (SASL, which the meta protocol lacks) the async face is
///   a bounded worker pool on the binary protocol that coalesces concurrent gets into one multi-get;
///   `ASYNC_WORKERS` sizes it.
@_spi(Backend) public final class MemcachedBackend: CacheBackend {
    let config: MemcachedConfiguration
    let pool: MemcachedPool
    /// The async face: on the event loop, speaking the meta protocol (nil with SASL credentials).
    let loopClient: MemcachedLoopClient?
    /// The async face with SASL credentials: worker threads on libmemcached's binary protocol
    /// (the meta protocol has no SASL).
    let asyncPool: MemcachedPool?
    let workers: MemcachedWorkers?
    /// Where each key lives, for the front's per-server breakers (nil with one server).
    private let placement: MemcachedHasher?

    /// The registry entry: `memcached`, and Django's dotted names for its memcached backends.
    public static let registryEntry = BackendEntry(
        name: "memcached",
        aliases: [
            "django.core.cache.backends.memcached.PyMemcacheCache",
            "django.core.cache.backends.memcached.PyLibMCCache",
            "django.core.cache.backends.memcached.MemcachedCache",
        ],
        optionNames: MemcachedConfiguration.optionNames
    ) { config in try MemcachedBackend(configuration: config) }

    /// Builds the backend from validated settings (connections open on first use).
    public init(configuration: BackendConfiguration) throws {
        config = try MemcachedConfiguration.parse(configuration)
        let factory = configuration.metricsFactory
        pool = try MemcachedPool(config: config, size: config.poolSize, alias: configuration.alias,
                                 metrics: ConnectionMetrics.make(system: "memcached", pool: config.description, face: "blocking", factory: factory))
        placement = config.servers.count > 1 ? MemcachedHasher(servers: config.servers, consistent: config.consistentHashing) : nil
        if config.username == nil {
            loopClient = try MemcachedLoopClient(loops: configuration.loops, config: config, alias: configuration.alias, metricsFactory: factory)
            asyncPool = nil
            workers = nil
        } else {
            loopClient = nil
            let p = try MemcachedPool(config: config, size: config.asyncWorkers, alias: configuration.alias,
                                      metrics: ConnectionMetrics.make(system: "memcached", pool: config.description, face: "async", factory: factory))
            asyncPool = p
            workers = MemcachedWorkers(pool: p, threads: config.asyncWorkers, server: config.description)
        }
    }

    deinit { workers?.stop() }

    /// memcached refuses keys over 250 bytes and keys with spaces or control characters.
    public var keyStrictness: KeyStrictness { .strict }
    /// Blocking calls wait on the network: the async-safety guard applies.
    public var waitsOnIO: Bool { true }
    /// `memcached`.
    public var databaseSystem: String? { "memcached" }
    /// True: the kind travels in the item flags.
    public var keepsValueKinds: Bool { true }
    /// The servers.
    public var backendDescription: String { "memcached://" + config.description }

    /// The server libmemcached's distribution (over every configured server) places `key` on, so that
    /// a dead server opens only its own breaker.
    public func breakerScope(forKey key: String) -> String? {
        guard let placement else { return nil }
        return config.servers[placement.server(for: key)].description
    }

    /// Coalescing counters of the worker-thread async face (SASL caches only; zero on the loop face):
    /// gets, round trips that carried them, largest batch.
    package var asyncGetStatistics: (gets: Int, roundTrips: Int, largestBatch: Int) {
        let s = workers?.statistics ?? .init()
        return (s.gets, s.getRoundTrips, s.largestBatch)
    }

    private func blocking<R>(_ body: (MemcachedOps) throws -> R) throws -> R {
        try pool.withHandle { try body(MemcachedOps(handle: $0, server: pool.description)) }
    }

    private func onWorker<T: Sendable>(_ body: @escaping @Sendable (MemcachedOps) throws -> T) async throws -> T {
        guard let workers else { throw CacheError.closed(alias: config.description) }
        return try await withPromise { (p: LoopPromise<T>) in
            workers.submit(.other({ ops in p.complete(Result { try body(ops) }) }, fail: { p.fail($0) }))
        }
    }

    // MARK: blocking face

    /// A get on a handle borrowed from the pool, on the calling thread.
    public func get(_ key: String) throws -> StoredValue? { try blocking { try $0.get(key) } }
    /// One multi-get (`memcached_mget`) on a pooled handle.
    public func getMany(_ keys: [String]) throws -> [String: StoredValue] { try blocking { try $0.getMany(keys) } }
    /// A set (add for `.add`) on a pooled handle; a value over the item size limit deletes the old one and throws `valueTooLarge`.
    public func set(_ key: String, _ value: StoredValue, expiry: CacheExpiry, mode: SetMode) throws -> Bool {
        try blocking { try $0.set(key, value, expiry: expiry, mode: mode) }
    }
    /// Sets each item on one pooled handle; returns the keys that failed.
    public func setMany(_ items: [(key: String, value: StoredValue)], expiry: CacheExpiry) throws -> [String] {
        try blocking { ops in MemcachedBackend.setEach(items, expiry, ops) }
    }
    /// A delete on a pooled handle; whether the key existed.
    public func delete(_ key: String) throws -> Bool { try blocking { try $0.delete(key) } }
    /// A get with the key's CAS and a compare-and-swap that expires it (see ``MemcachedOps/deleteIfEqual(_:_:)``).
    public func deleteIfEqual(_ key: String, _ expected: StoredValue) throws -> Bool { try blocking { try $0.deleteIfEqual(key, expected) } }
    /// Deletes each key on one pooled handle.
    public func deleteMany(_ keys: [String]) throws { try blocking { ops in for k in keys { _ = try ops.delete(k) } } }
    /// memcached's own incr/decr, atomic (memcached never goes below 0); a missing key is `CacheError.missingKey`.
    public func incr(_ key: String, by delta: Int64) throws -> Int64 { try blocking { try $0.incr(key, by: delta) } }
    /// A touch on a pooled handle; whether the key existed.
    public func touch(_ key: String, expiry: CacheExpiry) throws -> Bool { try blocking { try $0.touch(key, expiry: expiry) } }
    /// Whether the key exists (`memcached_exist` on a pooled handle).
    public func hasKey(_ key: String) throws -> Bool { try blocking { try $0.hasKey(key) } }
    /// flush_all on every server, as Django does: not only this cache's prefix.
    public func clear() throws { try blocking { try $0.clear() } }

    /// Closes the connections of every pooled handle not in use (both faces' pools); the next call
    /// reconnects.
    public func close() {
        pool.closeIdle()
        asyncPool?.closeIdle()
        loopClient?.close()
    }

    /// Ends the async face's worker threads (after the jobs already queued, which finish, each within
    /// the poll timeout) and closes every connection: the idle ones at once, a handle still in use as
    /// soon as its call ends.
    public func shutdown() async {
        if let workers {
            workers.stop()
            let clock = ContinuousClock()
            let deadline = clock.now + .milliseconds(2 * config.pollTimeoutMs + 100)
            while workers.runningThreads > 0, clock.now < deadline {
                try? await Task.sleep(for: .milliseconds(2))
            }
        }
        pool.shutDown()
        asyncPool?.shutDown()
        loopClient?.close()
    }

    /// Stores each item; the keys that failed (too large, or a server error) are returned.
    static func setEach(_ items: [(key: String, value: StoredValue)], _ expiry: CacheExpiry, _ ops: MemcachedOps) -> [String] {
        items.compactMap { item in
            (try? ops.set(item.key, item.value, expiry: expiry, mode: .set)) == true ? nil : item.key
        }
    }

    // MARK: async face

    /// A get: `mg` on the loop (pipelined with whatever else went out in the same turn); with SASL, on
    /// the worker pool, coalesced with the other waiting gets into one `memcached_mget`.
    public func asyncGet(_ key: String) async throws -> StoredValue? {
        if let loopClient { return try await loopClient.get(key) }
        guard let workers else { throw CacheError.closed(alias: config.description) }
        return try await withPromise { (p: LoopPromise<StoredValue?>) in workers.submit(.get(key, p)) }
    }
    /// One quiet `mg` batch per server, the servers asked at once (a multi-get on a worker with SASL).
    public func asyncGetMany(_ keys: [String]) async throws -> [String: StoredValue] {
        if let loopClient { return try await loopClient.getMany(keys) }
        return try await onWorker { try $0.getMany(keys) }
    }
    /// A set (add for `.add`): `ms` on the loop.
    public func asyncSet(_ key: String, _ value: StoredValue, expiry: CacheExpiry, mode: SetMode) async throws -> Bool {
        if let loopClient { return try await loopClient.set(key, value, expiry: expiry, mode: mode) }
        return try await onWorker { try $0.set(key, value, expiry: expiry, mode: mode) }
    }
    /// Sets each item (pipelined per server); returns the keys that failed.
    public func asyncSetMany(_ items: [(key: String, value: StoredValue)], expiry: CacheExpiry) async throws -> [String] {
        if let loopClient { return try await loopClient.setMany(items, expiry: expiry) }
        let sendable = items.map { SendableItem(key: $0.key, value: $0.value) }
        return try await onWorker { ops in MemcachedBackend.setEach(sendable.map { ($0.key, $0.value) }, expiry, ops) }
    }
    /// A delete (`md`); whether the key existed.
    public func asyncDelete(_ key: String) async throws -> Bool {
        if let loopClient { return try await loopClient.delete(key) }
        return try await onWorker { try $0.delete(key) }
    }
    /// `mg` with the CAS, then `md` with it (on a worker with SASL: as the blocking face).
    public func asyncDeleteIfEqual(_ key: String, _ expected: StoredValue) async throws -> Bool {
        if let loopClient { return try await loopClient.deleteIfEqual(key, expected) }
        return try await onWorker { try $0.deleteIfEqual(key, expected) }
    }
    /// Deletes each key (pipelined per server).
    public func asyncDeleteMany(_ keys: [String]) async throws {
        if let loopClient { return try await loopClient.deleteMany(keys) }
        try await onWorker { ops in for k in keys { _ = try ops.delete(k) } }
    }
    /// memcached's own atomic incr/decr (`ma`): atomic in the async face too.
    public func asyncIncr(_ key: String, by delta: Int64) async throws -> Int64 {
        if let loopClient { return try await loopClient.incr(key, by: delta) }
        return try await onWorker { try $0.incr(key, by: delta) }
    }
    /// A touch (`mg` with `T`); whether the key existed.
    public func asyncTouch(_ key: String, expiry: CacheExpiry) async throws -> Bool {
        if let loopClient { return try await loopClient.touch(key, expiry: expiry) }
        return try await onWorker { try $0.touch(key, expiry: expiry) }
    }
    /// Whether the key exists (`mg` without a value).
    public func asyncHasKey(_ key: String) async throws -> Bool {
        if let loopClient { return try await loopClient.hasKey(key) }
        return try await onWorker { try $0.hasKey(key) }
    }
    /// flush_all on every server.
    public func asyncClear() async throws {
        if let loopClient { return try await loopClient.clear() }
        try await onWorker { try $0.clear() }
    }
}

struct SendableItem: Sendable {
    let key: String
    let value: StoredValue
}
