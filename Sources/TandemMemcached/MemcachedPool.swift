import CMemcached
import Dispatch
import Foundation
import Synchronization
import TandemCache
import TandemLoop
import TandemTransport

/// A bounded `memcached_pool` of handles. Its one owner is this object; `deinit` destroys it.
final class MemcachedPool: @unchecked Sendable {
    // Why @unchecked Sendable is safe: `memcached_pool_fetch` and `memcached_pool_release` are
    // thread-safe (libmemcachedutil locks internally), and a fetched handle is used by exactly one
    // thread until it is released. The pool pointer itself never changes.
    private let pool: OpaquePointer
    let size: Int
    let timeout: Double
    let description: String
    /// Handles that already got their SASL credentials (credentials are set once per handle).
    private let config: MemcachedConfiguration
    private let authenticatedHandles = Mutex<Set<UInt>>([])
    /// Set by ``shutDown()``; from then on a handle is disconnected as it comes back to the pool. The
    /// same lock covers a handle's return, so a handle is either back before ``shutDown()`` looks
    /// (and closed there) or sees the flag (and is closed on its way back): none keeps a connection.
    private let isShutDown = Mutex(false)
    /// One permit per handle. The wait for a free handle happens here, on the monotonic clock, and not
    /// in `memcached_pool_fetch`: libmemcached 1.1.4 adds the timeout to `time(NULL)`, whole seconds
    /// of the wall clock, so its wait ends anywhere between 0 and the timeout (a 1 s POOL_TIMEOUT
    /// failed callers after a few milliseconds). Holding a permit, a caller finds a free handle, or
    /// room to make one.
    private let capacity: PoolPermits
    /// Waits for a handle, callers that gave up, handles lent out (nil: not measured). libmemcached
    /// connects inside a handle, out of sight: connection counts come from the loop-driven face.
    private let metrics: ConnectionMetrics?

    init(config: MemcachedConfiguration, size: Int, alias: String, metrics: ConnectionMetrics? = nil) throws {
        self.metrics = metrics
        let options = config.optionString(size: size)
        guard let p = options.withCString({ memcached_pool($0, strlen($0)) }) else {
            throw CacheError.invalidSetting(alias: alias, field: "LOCATION", reason: "libmemcached rejected the server list")
        }
        pool = p
        self.size = size
        self.timeout = config.poolTimeout
        self.description = config.description
        self.config = config
        self.capacity = PoolPermits(count: size)
        func set(_ b: memcached_behavior_t, _ v: UInt64) { _ = memcached_pool_behavior_set(p, b, v) }
        set(MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, config.binaryProtocol ? 1 : 0)
        set(MEMCACHED_BEHAVIOR_TCP_NODELAY, config.tcpNoDelay ? 1 : 0)
        set(MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, UInt64(config.connectTimeoutMs))
        set(MEMCACHED_BEHAVIOR_POLL_TIMEOUT, UInt64(config.pollTimeoutMs))
        set(MEMCACHED_BEHAVIOR_RCV_TIMEOUT, UInt64(config.pollTimeoutMs) * 1000)
        set(MEMCACHED_BEHAVIOR_SND_TIMEOUT, UInt64(config.pollTimeoutMs) * 1000)
        if config.consistentHashing {
            set(MEMCACHED_BEHAVIOR_DISTRIBUTION, UInt64(MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA.rawValue))
        }
        if config.removeFailedServers {
            set(MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS, 1)
            set(MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, 1)
            set(MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, UInt64(config.retryTimeout))
            set(MEMCACHED_BEHAVIOR_DEAD_TIMEOUT, UInt64(config.retryTimeout))
        }
    }

    deinit {
        if let master = memcached_pool_destroy(pool) { memcached_free(master) }
    }

    /// Closes the server connections of every handle not in use (`memcached_quit`); a handle
    /// reconnects on its next use. Handles lent out at the time keep theirs.
    func closeIdle() {
        var idle: [UnsafeMutablePointer<memcached_st>] = []
        var rc = MEMCACHED_SUCCESS
        var now = timespec(tv_sec: 0, tv_nsec: 0)  // never wait: a handle in use is not ours to close
        while idle.count < size, capacity.takeIfFree() {
            guard let h = memcached_pool_fetch(pool, &now, &rc) else {
                capacity.giveBack()
                break
            }
            idle.append(h)
        }
        for h in idle {
            memcached_quit(h)
            _ = memcached_pool_release(pool, h)
            capacity.giveBack()
        }
    }

    /// Closes every idle handle's connections now and every lent handle's as it comes back.
    func shutDown() {
        isShutDown.locked { $0 = true }
        closeIdle()
    }

    /// Puts a borrowed handle back, disconnected first once the pool is shut down.
    private func giveBack(_ handle: UnsafeMutablePointer<memcached_st>) {
        isShutDown.locked { down in
            if down { memcached_quit(handle) }
            _ = memcached_pool_release(pool, handle)
        }
    }

    /// Borrows a handle (waiting at most `timeout`), runs `body` on the calling thread, returns it.
    func withHandle<R>(_ body: (UnsafeMutablePointer<memcached_st>) throws -> R) throws -> R {
        let waitStart = metrics == nil ? 0 : monotonicNanos()
        guard capacity.take(waitingAtMost: timeout) else {
            metrics?.timeouts.increment()
            throw CacheError.poolExhausted(server: description, size: size)
        }
        defer { capacity.giveBack() }
        metrics?.lent(waitingSince: waitStart)
        defer { metrics?.used.decrement() }
        var rc = MEMCACHED_SUCCESS
        // With a permit a handle is free or can be made; the short wait only covers a handle that
        // `closeIdle` holds for a moment (whole seconds: see `capacity`).
        var wait = timespec(tv_sec: 2, tv_nsec: 0)
        guard let handle = memcached_pool_fetch(pool, &wait, &rc) else {
            throw CacheError.poolExhausted(server: description, size: size)
        }
        defer { giveBack(handle) }
        if let user = config.username, let password = config.password {
            let key = UInt(bitPattern: handle)
            let fresh = authenticatedHandles.locked { $0.insert(key).inserted }
            if fresh { _ = memcached_set_sasl_auth_data(handle, user, password) }
        }
        return try body(handle)
    }
}
