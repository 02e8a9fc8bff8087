import CMemcached
import TandemCache
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
/// - Blocking face: the calling thread borrows a pooled handle and does the I/O. Async face: a
///   bounded worker pool that coalesces concurrent gets into one multi-get.
public final class MemcachedBackend: CacheBackend {
    let config: MemcachedConfiguration
    let pool: MemcachedPool
    let asyncPool: MemcachedPool
    let workers: MemcachedWorkers

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
        pool = try MemcachedPool(config: config, size: config.poolSize, alias: configuration.alias)
        asyncPool = try MemcachedPool(config: config, size: config.asyncWorkers, alias: configuration.alias)
        workers = MemcachedWorkers(pool: asyncPool, threads: config.asyncWorkers, server: config.description)
    }

    deinit { workers.stop() }

    /// memcached refuses keys over 250 bytes and keys with spaces or control characters.
    public var keyStrictness: KeyStrictness { .strict }
    /// Blocking calls wait on the network: the async-safety guard applies.
    public var waitsOnIO: Bool { true }
    /// The servers.
    public var backendDescription: String { "memcached://" + config.description }

    /// Coalescing counters of the async face: gets, round trips that carried them, largest batch.
    public var asyncGetStatistics: (gets: Int, roundTrips: Int, largestBatch: Int) {
        let s = workers.statistics
        return (s.gets, s.getRoundTrips, s.largestBatch)
    }

    private func blocking<R>(_ body: (MemcachedOps) throws -> R) throws -> R {
        try pool.withHandle { try body(MemcachedOps(handle: $0, server: config.description)) }
    }

    private func onWorker<T: Sendable>(_ body: @escaping @Sendable (MemcachedOps) throws -> T) async throws -> T {
        try await withPromise { (p: LoopPromise<T>) in
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
        asyncPool.closeIdle()
    }

    /// Ends the async face's worker threads (after the jobs already queued, which finish, each within
    /// the poll timeout) and closes every connection: the idle ones at once, a handle still in use as
    /// soon as its call ends.
    public func shutdown() async {
        workers.stop()
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(2 * config.pollTimeoutMs + 100)
        while workers.runningThreads > 0, clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(2))
        }
        pool.shutDown()
        asyncPool.shutDown()
    }

    /// Stores each item; the keys that failed (too large, or a server error) are returned.
    static func setEach(_ items: [(key: String, value: StoredValue)], _ expiry: CacheExpiry, _ ops: MemcachedOps) -> [String] {
        items.compactMap { item in
            (try? ops.set(item.key, item.value, expiry: expiry, mode: .set)) == true ? nil : item.key
        }
    }

    // MARK: async face

    /// A get on the worker pool, coalesced with the other gets waiting into one `memcached_mget`.
    public func asyncGet(_ key: String) async throws -> StoredValue? {
        try await withPromise { (p: LoopPromise<StoredValue?>) in workers.submit(.get(key, p)) }
    }
    /// One multi-get on the worker pool.
    public func asyncGetMany(_ keys: [String]) async throws -> [String: StoredValue] {
        try await onWorker { try $0.getMany(keys) }
    }
    /// A set (add for `.add`) on the worker pool.
    public func asyncSet(_ key: String, _ value: StoredValue, expiry: CacheExpiry, mode: SetMode) async throws -> Bool {
        try await onWorker { try $0.set(key, value, expiry: expiry, mode: mode) }
    }
    /// Sets each item on the worker pool; returns the keys that failed.
    public func asyncSetMany(_ items: [(key: String, value: StoredValue)], expiry: CacheExpiry) async throws -> [String] {
        let sendable = items.map { SendableItem(key: $0.key, value: $0.value) }
        return try await onWorker { ops in MemcachedBackend.setEach(sendable.map { ($0.key, $0.value) }, expiry, ops) }
    }
    /// A delete on the worker pool; whether the key existed.
    public func asyncDelete(_ key: String) async throws -> Bool { try await onWorker { try $0.delete(key) } }
    /// Deletes each key on the worker pool.
    public func asyncDeleteMany(_ keys: [String]) async throws { try await onWorker { ops in for k in keys { _ = try ops.delete(k) } } }
    /// memcached's own incr/decr on the worker pool: atomic in the async face too.
    public func asyncIncr(_ key: String, by delta: Int64) async throws -> Int64 { try await onWorker { try $0.incr(key, by: delta) } }
    /// A touch on the worker pool; whether the key existed.
    public func asyncTouch(_ key: String, expiry: CacheExpiry) async throws -> Bool { try await onWorker { try $0.touch(key, expiry: expiry) } }
    /// Whether the key exists (`memcached_exist`), asked on the worker pool.
    public func asyncHasKey(_ key: String) async throws -> Bool { try await onWorker { try $0.hasKey(key) } }
    /// flush_all on every server, on the worker pool.
    public func asyncClear() async throws { try await onWorker { try $0.clear() } }
}

struct SendableItem: Sendable {
    let key: String
    let value: StoredValue
}
