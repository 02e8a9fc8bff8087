import CMemcached
import Dispatch
import Foundation
import Synchronization
import TandemCache

/// What a memcached cache connects to and how: parsed from LOCATION and OPTIONS.
struct MemcachedConfiguration: Sendable {
    enum Server: Sendable, Hashable {
        case tcp(host: String, port: Int)
        case unix(path: String)
        var description: String {
            switch self {
            case .tcp(let h, let p): return "\(h):\(p)"
            case .unix(let path): return "unix:\(path)"
            }
        }
    }
    var servers: [Server]
    var binaryProtocol: Bool
    var tcpNoDelay: Bool
    var connectTimeoutMs: Int
    var pollTimeoutMs: Int
    var poolSize: Int
    var poolTimeout: Double
    var asyncWorkers: Int
    var removeFailedServers: Bool
    var retryTimeout: Int
    var consistentHashing: Bool
    var username: String?
    var password: String?

    var description: String { servers.map(\.description).joined(separator: ",") }

    static let optionNames: Set<String> = [
        "BINARY_PROTOCOL", "TCP_NODELAY", "CONNECT_TIMEOUT", "POLL_TIMEOUT", "POOL_SIZE", "POOL_TIMEOUT",
        "ASYNC_WORKERS", "REMOVE_FAILED_SERVERS", "RETRY_TIMEOUT", "CONSISTENT_HASHING", "USERNAME", "PASSWORD",
    ]

    /// LOCATION entries: `host:port`, `unix:/path`, `/path`, or `memcached://host:port` (a `;`/`,`
    /// separated string is already split by the settings parser).
    static func parse(_ config: BackendConfiguration) throws -> MemcachedConfiguration {
        var servers: [Server] = []
        for raw in config.location.flatMap({ $0.split(whereSeparator: { $0 == ";" || $0 == "," }).map(String.init) }) {
            var s = raw
            if let r = s.range(of: "://") { s = String(s[r.upperBound...]) }
            if s.hasPrefix("unix:") { s = String(s.dropFirst(5)) }
            if s.hasPrefix("/") {
                servers.append(.unix(path: s))
                continue
            }
            var host = s
            var port = 11211
            if let colon = s.lastIndex(of: ":") {
                host = String(s[..<colon])
                guard let p = Int(s[s.index(after: colon)...]), (1...65535).contains(p) else {
                    throw config.locationError("invalid port in \"\(raw)\"")
                }
                port = p
            }
            if host.hasPrefix("["), host.hasSuffix("]"), host.count > 2 { host = String(host.dropFirst().dropLast()) }
            guard !host.isEmpty, host.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7f && !"\"[]/@?#".unicodeScalars.contains($0) }) else {
                throw config.locationError("invalid server \"\(raw)\": expected host:port (a host without spaces, control or reserved characters)")
            }
            servers.append(.tcp(host: host, port: port))
        }
        guard !servers.isEmpty else { throw config.locationError("at least one memcached server (host:port or unix:/path) is required") }
        let o = config.options
        let c = MemcachedConfiguration(
            servers: servers,
            binaryProtocol: try o.bool("BINARY_PROTOCOL", default: false),
            tcpNoDelay: try o.bool("TCP_NODELAY", default: true),
            connectTimeoutMs: Int(try o.double("CONNECT_TIMEOUT", default: 1, range: 0.001...3600) * 1000),
            pollTimeoutMs: Int(try o.double("POLL_TIMEOUT", default: 1, range: 0.001...3600) * 1000),
            poolSize: try o.int("POOL_SIZE", default: 16, range: 1...1024),
            poolTimeout: try o.double("POOL_TIMEOUT", default: 1, range: 0...3600),
            asyncWorkers: try o.int("ASYNC_WORKERS", default: 2, range: 1...256),
            removeFailedServers: try o.bool("REMOVE_FAILED_SERVERS", default: true),
            retryTimeout: try o.int("RETRY_TIMEOUT", default: 2, range: 0...3600),
            consistentHashing: try o.bool("CONSISTENT_HASHING", default: true),
            username: try o.string("USERNAME"),
            password: try o.string("PASSWORD"))
        if (c.username != nil || c.password != nil) && !c.binaryProtocol {
            throw CacheError.invalidSetting(alias: config.alias, field: "OPTIONS.USERNAME",
                                            reason: "SASL authentication needs the binary protocol: set OPTIONS.BINARY_PROTOCOL to true")
        }
        if c.username == nil, o.values["ASYNC_WORKERS"] != nil {
            // Only SASL caches have worker threads; elsewhere the option would be silently ignored.
            throw CacheError.invalidSetting(alias: config.alias, field: "OPTIONS.ASYNC_WORKERS",
                                            reason: "only a cache with USERNAME/PASSWORD (SASL) has async workers; the async face runs on the event loop")
        }
        if (c.username == nil) != (c.password == nil) {
            throw CacheError.invalidSetting(alias: config.alias, field: "OPTIONS.PASSWORD", reason: "USERNAME and PASSWORD go together")
        }
        return c
    }

    /// libmemcached's configuration string for a pool of `size` handles.
    func optionString(size: Int) -> String {
        var parts = servers.map { s -> String in
            switch s {
            case .tcp(let h, let p): return "--SERVER=\(h):\(p)"
            case .unix(let path): return "--SOCKET=\"\(path)\""
            }
        }
        parts.append("--POOL-MIN=1")
        parts.append("--POOL-MAX=\(size)")
        return parts.joined(separator: " ")
    }
}

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
    private let capacity: DispatchSemaphore

    init(config: MemcachedConfiguration, size: Int, alias: String) throws {
        let options = config.optionString(size: size)
        guard let p = options.withCString({ memcached_pool($0, strlen($0)) }) else {
            throw CacheError.invalidSetting(alias: alias, field: "LOCATION", reason: "libmemcached rejected the server list")
        }
        pool = p
        self.size = size
        self.timeout = config.poolTimeout
        self.description = config.description
        self.config = config
        self.capacity = DispatchSemaphore(value: size)
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
        while idle.count < size, capacity.wait(timeout: .now()) == .success {
            guard let h = memcached_pool_fetch(pool, &now, &rc) else {
                capacity.signal()
                break
            }
            idle.append(h)
        }
        for h in idle {
            memcached_quit(h)
            _ = memcached_pool_release(pool, h)
            capacity.signal()
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
        guard capacity.wait(timeout: .now() + timeout) == .success else {
            throw CacheError.poolExhausted(server: description, size: size)
        }
        defer { capacity.signal() }
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
