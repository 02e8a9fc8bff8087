import Logging
import Synchronization
@_spi(Backend) import TandemCache
import TandemTransport
import TandemLoop

#if canImport(Glibc)
import Glibc
#endif

/// Redis through libhiredis, Django's RedisCache semantics.
///
/// - LOCATION: `redis://[user:password@]host:port[/db]` or `unix:///path[?db=N]`; several locations:
///   writes go to the first, reads to one of the others at random (Django's primary/replica rule).
///   `rediss://host:port[/db]` speaks TLS (OpenSSL) in both faces, verifying the server's
///   certificate and name; redis-py's `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile` and
///   `ssl_cert_reqs` (`required` or `none`) as query parameters or OPTIONS (upper case).
///   `redis+sentinel://host:port[,host:port...]/SERVICE[/db]` (or `rediss+sentinel://`): the primary
///   of SERVICE as the sentinels name it at every connect, followed through failovers (its
///   `+switch-master` announcements, READONLY answers and a ROLE check at connect). With
///   `READ_FROM_REPLICAS` true, reads go to the healthy replicas the sentinels list (in turn; the
///   primary when none is healthy, until the sentinels announce one back, or for at most 5 s), writes
///   to the primary; replicas copy writes asynchronously, so a
///   read right after a write may not see it yet. On `redis+cluster://` the same option sends reads
///   to the replicas of each slot's primary (behind `READONLY`).
/// - Connections the server closed (a restart, `CLIENT KILL`, an idle timeout) are replaced at the
///   next command. An idempotent command that meets such a connection (`get`, `get_many`, `has_key`,
///   `set`, `set_many`, `delete_many`, `clear`) is sent once more on the new one, in both faces; the
///   others (`add`, `delete`, `incr`, `touch`: a lost reply cannot say whether they were applied)
///   fail with ``CacheError/connectionFailed(server:reason:)``.
/// - OPTIONS: `CONNECT_TIMEOUT` (s, 1), `COMMAND_TIMEOUT` (s, 1), `POOL_SIZE` (blocking connections
///   per server, 16), `POOL_TIMEOUT` (s to wait for a pooled connection, 1), `ASYNC_CONNECTIONS` (per
///   server; default one per loop, spread over the loops), `DB`, `USERNAME`, `PASSWORD` (the URL's credentials win), `READ_FROM_REPLICAS`
///   (Sentinel and Cluster, false), `SENTINEL_USERNAME` and `SENTINEL_PASSWORD` (the sentinels' own
///   login, for sentinels run with `requirepass`; the location's credentials are the data nodes').
/// - `NEAR_CACHE`: `true`, or an object with `MAX_ENTRIES` (10000), `MAX_BYTES` (64 MiB), `TTL` (s,
///   60: the longest a value lives locally) and `MODE` (`"tracking"`, the default, or `"broadcast"`):
///   reads (`get`, `get_many`, `has_key`, the read of `get_or_set`) are kept in process memory, in
///   both faces, and Redis tells the process when a kept key changes (client tracking, one
///   invalidation connection per server). See ``NearCache`` for what it guarantees. Not on
///   `redis+cluster://` yet.
/// - Blocking face: the calling thread talks to Redis on a pooled connection. Async face: connections
///   owned by the loop, commands submitted in one loop turn go out in one write.
/// - `clear()` runs FLUSHDB on the primary's database, as Django does: it removes every key in that
///   database, not only this cache's prefix.
/// - Values are stored as their bytes, so `redis-cli GET` shows strings and integers as plain text. A
///   stored `nil` is ``StoredValue/nullBytes``; any other value, whoever wrote it, reads back as itself.
/// - The process ignores SIGPIPE once a Redis backend exists (hiredis writes with `write()`).
@_spi(Backend) public final class RedisBackend: CacheBackend {
    let primary: RedisNode
    let replicas: [RedisNode]
    /// Hot values kept in process memory (`NEAR_CACHE`), with one invalidation connection per server
    /// (the primary, then the replicas, as ``node(_:)`` numbers them).
    let near: NearCache?
    let listeners: [InvalidationListener]
    /// The near caches of this process on the same locations (this one among them): local writes
    /// drop their keys from all of them.
    let neighbours: NearCacheNeighbours?

    /// The OPTIONS this backend understands.
    public static let optionNames: Set<String> = [
        "CONNECT_TIMEOUT", "COMMAND_TIMEOUT", "POOL_SIZE", "POOL_TIMEOUT", "ASYNC_CONNECTIONS", "DB", "USERNAME", "PASSWORD",
        "SSL_CA_CERTS", "SSL_CERTFILE", "SSL_KEYFILE", "SSL_CERT_REQS", "SSL_CHECK_HOSTNAME", "READ_FROM_REPLICAS", "SENTINEL_USERNAME", "SENTINEL_PASSWORD", "NEAR_CACHE",
    ]

    /// The registry entry: `redis`, and Django's and django-redis's dotted names.
    public static let registryEntry = BackendEntry(
        name: "redis",
        aliases: ["django.core.cache.backends.redis.RedisCache", "django_redis.cache.RedisCache"],
        optionNames: optionNames
    ) { config in try RedisBackend.make(configuration: config) }

    private static let ignoreSIGPIPE: Void = { _ = signal(SIGPIPE, SIG_IGN) }()

    /// The backend for `config`: Redis Cluster for a `redis+cluster://` location, otherwise this one.
    static func make(configuration config: BackendConfiguration) throws -> any CacheBackend {
        guard let first = config.location.first, first.lowercased().hasPrefix("redis+cluster://") || first.lowercased().hasPrefix("rediss+cluster://") else {
            return try RedisBackend(configuration: config)
        }
        _ = RedisBackend.ignoreSIGPIPE
        guard config.location.count == 1 else {
            throw config.locationError("a redis+cluster:// location names every seed node itself (host:port,host:port...); give it alone")
        }
        if try NearCacheSettings.parse(config.options) != nil {
            throw CacheError.invalidSetting(alias: config.alias, field: "OPTIONS.NEAR_CACHE",
                                            reason: "not available on redis+cluster:// yet (a plain server, replicas or Sentinel only)")
        }
        let endpoint = try RedisEndpoint.parse(first, alias: config.alias, options: config.options)
        let settings = try nodeSettings(config)
        let tls = try endpoint.tls.map { try makeTLSContext($0, endpoint: endpoint, alias: config.alias) }
        let cluster = RedisCluster(endpoint: endpoint, seeds: endpoint.clusterSeeds ?? [], tls: tls, settings: settings,
                                   readFromReplicas: try config.options.bool("READ_FROM_REPLICAS", default: false))
        return RedisClusterBackend(cluster: cluster)
    }

    /// The timeouts, pool and loop settings every node of a backend shares, from OPTIONS.
    static func nodeSettings(_ config: BackendConfiguration) throws -> RedisNodeSettings {
        let o = config.options
        let commandTimeout = try o.double("COMMAND_TIMEOUT", default: 1, range: 0.001...3600)
        return RedisNodeSettings(
            loops: config.loops,
            connectTimeout: try o.double("CONNECT_TIMEOUT", default: 1, range: 0.001...3600),
            commandTimeout: commandTimeout,
            poolSize: try o.int("POOL_SIZE", default: 16, range: 1...4096),
            poolTimeout: try o.double("POOL_TIMEOUT", default: commandTimeout, range: 0...3600),
            asyncConnections: try o.int("ASYNC_CONNECTIONS", default: config.loops.count, range: 1...256),
            metricsFactory: config.metricsFactory)
    }

    /// Builds the backend from validated settings (nothing connects until the first command).
    public init(configuration config: BackendConfiguration) throws {
        _ = RedisBackend.ignoreSIGPIPE
        guard !config.location.isEmpty else { throw config.locationError("at least one redis:// location is required") }
        let o = config.options
        let settings = try RedisBackend.nodeSettings(config)
        let connectTimeout = settings.connectTimeout
        let commandTimeout = settings.commandTimeout
        let loop = settings.loops[0]
        let readFromReplicas = try o.bool("READ_FROM_REPLICAS", default: false)
        let nearSettings = try NearCacheSettings.parse(o)
        let servers = config.location.count + (readFromReplicas ? config.location.count : 0)
        let near = nearSettings.map { NearCache(settings: $0, servers: servers) }
        // In tracking mode the server forgets what a connection read when it closes.
        var lost: (@Sendable () -> Void)?
        if let near, near.settings.mode == .tracking { lost = { near.flush() } }
        var nodes: [RedisNode] = []
        var replicaReaders: [RedisNode] = []
        var contexts: [TLSClientSettings: TLSClientContext] = [:]
        for location in config.location {
            let endpoint = try RedisEndpoint.parse(location, alias: config.alias, options: o)
            var tls: TLSClientContext?
            if let settings = endpoint.tls {
                tls = try contexts[settings] ?? RedisBackend.makeTLSContext(settings, endpoint: endpoint, alias: config.alias)
                contexts[settings] = tls
            }
            let sentinel = endpoint.sentinels.map {
                RedisSentinel(spec: $0, description: endpoint.description, tls: tls, connectTimeout: connectTimeout, commandTimeout: commandTimeout, loop: loop,
                              metricsFactory: config.metricsFactory)
            }
            if endpoint.clusterSeeds != nil {
                throw config.locationError("a redis+cluster:// location names every seed node itself (host:port,host:port...); give it alone")
            }
            nodes.append(settings.makeNode(RedisTarget(endpoint: endpoint, sentinel: sentinel), tls: tls, onConnectionLost: lost))
            if readFromReplicas, sentinel != nil {
                replicaReaders.append(settings.makeNode(RedisTarget(endpoint: endpoint, sentinel: sentinel, readsReplica: true), tls: tls,
                                                        onConnectionLost: lost))
            }
        }
        if readFromReplicas && replicaReaders.isEmpty {
            throw CacheError.invalidSetting(alias: config.alias, field: "OPTIONS.READ_FROM_REPLICAS",
                                            reason: "only for a redis+sentinel:// or redis+cluster:// location (with redis:// locations, reads already go to the ones after the first)")
        }
        primary = nodes[0]
        replicas = Array(nodes.dropFirst()) + replicaReaders
        self.near = near
        neighbours = near.map { NearCacheNeighbours.joining($0, location: config.location.joined(separator: ",")) }
        if let near {
            let prefix = near.settings.mode == .broadcast ? (config.keyPrefix.map { $0.isEmpty ? "" : $0 + ":" } ?? "") : nil
            let metrics = NearCacheMetrics(alias: config.alias, factory: config.metricsFactory)
            listeners = ([primary] + replicas).enumerated().map { i, node in
                InvalidationListener(loop: settings.loops[i % settings.loops.count], target: node.pool.target, tls: node.pool.tls, server: i,
                                     near: near, broadcastPrefix: prefix, connectTimeout: connectTimeout, commandTimeout: commandTimeout,
                                     metrics: metrics)
            }
        } else {
            listeners = []
        }
    }

    deinit {
        close()
        if let near { neighbours?.leave(near) }
    }

    /// Loads the CA and client certificate files once, when the cache is built: a file that cannot be
    /// used is a settings error naming it. Turning verification off is logged, once per cache.
    private static func makeTLSContext(_ settings: TLSClientSettings, endpoint: RedisEndpoint, alias: String) throws -> TLSClientContext {
        let context: TLSClientContext
        do {
            context = try TLSClientContext(settings)
        } catch {
            throw CacheError.invalidSetting(alias: alias, field: endpoint.tlsSource == "LOCATION" ? "LOCATION" : "OPTIONS.SSL_*",
                                            reason: "\(error.reason) (for \(endpoint.description))")
        }
        if !settings.verifyPeer {
            Logger(label: "tandem.redis").warning(
                "TLS without certificate verification (ssl_cert_reqs=none): the connection is encrypted, but any server can pose as this one",
                metadata: ["cache": "\(alias)", "server": "\(endpoint.description)"])
        } else if !settings.checkHostname {
            Logger(label: "tandem.redis").warning(
                "TLS without a host name check (ssl_check_hostname=false): any server with a certificate from a trusted CA can pose as this one",
                metadata: ["cache": "\(alias)", "server": "\(endpoint.description)"])
        }
        return context
    }

    /// Redis accepts any key; keys memcached would refuse are warned about once.
    public var keyStrictness: KeyStrictness { .lenient }
    /// Blocking calls wait on the network: the async-safety guard applies.
    public var waitsOnIO: Bool { true }
    /// `redis`.
    public var databaseSystem: String? { "redis" }
    /// True with `OPTIONS.NEAR_CACHE`.
    public var keepsNearCache: Bool { near != nil }
    /// The primary (and replicas), without credentials.
    public var backendDescription: String {
        var seen: Set<String> = []  // a sentinel location's replica readers share its description
        return ([primary] + replicas).map(\.endpoint.description).filter { seen.insert($0).inserted }.joined(separator: ",")
    }

    /// Where reads go: a random replica, or the primary when there is none.
    var readNode: RedisNode { replicas.randomElement() ?? primary }

    // MARK: commands and reply mapping, shared by both faces

    static let incrScript = Array("""
        if redis.call('EXISTS', KEYS[1]) == 0 then return false end
        return redis.call('INCRBY', KEYS[1], ARGV[1])
        """.utf8)
    static let persistScript = Array("""
        if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
        redis.call('PERSIST', KEYS[1])
        return 1
        """.utf8)
    static let deleteIfEqualScript = Array("""
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """.utf8)

    /// The names of the hottest commands, made once (a literal's bytes would be a new array per call).
    static let getName = "GET".bytes
    static let setName = "SET".bytes

    static func getCommand(_ key: String) -> [[UInt8]] { [getName, key.bytes] }
    static func mgetCommand(_ keys: [String]) -> [[UInt8]] { ["MGET".bytes] + keys.map(\.bytes) }
    static func setCommand(_ key: String, _ value: StoredValue, _ expiry: CacheExpiry, _ mode: SetMode) -> [[UInt8]] {
        var c: [[UInt8]] = [setName, key.bytes, value.untaggedBytes]
        if let ms = expiry.milliseconds { c += ["PX".bytes, String(ms).bytes] }
        if mode == .add { c.append("NX".bytes) }
        return c
    }
    static func delCommand(_ keys: [String]) -> [[UInt8]] { ["DEL".bytes] + keys.map(\.bytes) }
    /// The SHA-1 digests of the scripts (what `SCRIPT LOAD` answers; a test checks them against a
    /// server), so that a call sends `EVALSHA` and 40 bytes instead of the script's source.
    static let incrScriptSHA = "e3d1ac791c6d2b2d2746564351d80421f000bba3".bytes
    static let persistScriptSHA = "f0f51002038002ef83d61771704fe9b1c0ec5751".bytes
    static let deleteIfEqualScriptSHA = "7f8f6677b8f2b4b65b9b9905151ced126e6b7e49".bytes
    private static let scriptsBySHA: [[UInt8]: [UInt8]] = [
        incrScriptSHA: incrScript, persistScriptSHA: persistScript, deleteIfEqualScriptSHA: deleteIfEqualScript,
    ]

    static func incrCommand(_ key: String, _ delta: Int64) -> [[UInt8]] {
        ["EVALSHA".bytes, incrScriptSHA, "1".bytes, key.bytes, String(delta).bytes]
    }
    /// GET, compare with `expected`, DEL: one script, so nothing runs between the compare and the delete.
    static func deleteIfEqualCommand(_ key: String, _ expected: StoredValue) -> [[UInt8]] {
        ["EVALSHA".bytes, deleteIfEqualScriptSHA, "1".bytes, key.bytes, expected.untaggedBytes]
    }
    static func touchCommand(_ key: String, _ expiry: CacheExpiry) -> [[UInt8]] {
        if let ms = expiry.milliseconds { return ["PEXPIRE".bytes, key.bytes, String(ms).bytes] }
        return ["EVALSHA".bytes, persistScriptSHA, "1".bytes, key.bytes]
    }

    /// For an `EVALSHA` the server answered with `NOSCRIPT` (its script cache is empty after a restart,
    /// `SCRIPT FLUSH` or a failover): the same call as `EVAL` with the script's source, which also
    /// loads it for the next `EVALSHA`. Nil for any other command or reply.
    static func scriptFallback(_ command: [[UInt8]], after reply: RedisValue) -> [[UInt8]]? {
        guard case .error(let message) = reply, message.hasPrefix("NOSCRIPT"), command.count > 1,
              command[0] == "EVALSHA".bytes, let source = scriptsBySHA[command[1]] else { return nil }
        return ["EVAL".bytes, source] + command.dropFirst(2)
    }

    static func existsCommand(_ key: String) -> [[UInt8]] { ["EXISTS".bytes, key.bytes] }
    static let flushCommand: [[UInt8]] = ["FLUSHDB".bytes]

    static func serverError(_ v: RedisValue, _ node: RedisNode) -> CacheError {
        if case .error(let m) = v {
            // A server that wants a password (or a different one) answers every command this way.
            if m.hasPrefix("NOAUTH") || m.hasPrefix("WRONGPASS") {
                return .authenticationFailed(server: node.endpoint.description, reason: m)
            }
            return .serverError(server: node.endpoint.description, message: m)
        }
        return .serverError(server: node.endpoint.description, message: "unexpected reply \(v)")
    }

    /// The answer of a GET. Out of line: it runs after the await, and inlined its temporaries
    /// made the async frame of ``asyncGet(_:)`` 64 bytes larger.
    @inline(never)
    static func mapGet(_ v: RedisValue, _ node: RedisNode) throws -> StoredValue? {
        switch v {
        case .bulk(let b): return StoredValue(untagged: b)
        case .null: return nil
        default: throw Self.serverError(v, node)
        }
    }

    static func mapMGet(_ v: RedisValue, _ keys: [String], _ node: RedisNode) throws -> [String: StoredValue] {
        guard case .array(let items) = v, items.count == keys.count else { throw Self.serverError(v, node) }
        var out: [String: StoredValue] = [:]
        for (k, item) in zip(keys, items) {
            if case .bulk(let b) = item { out[k] = StoredValue(untagged: b) }
        }
        return out
    }

    static func mapSet(_ v: RedisValue, _ node: RedisNode) throws -> Bool {
        switch v {
        case .status: return true
        case .null: return false  // NX and the key exists
        default: throw Self.serverError(v, node)
        }
    }

    static func mapInteger(_ v: RedisValue, _ node: RedisNode) throws -> Int64 {
        guard case .integer(let i) = v else { throw Self.serverError(v, node) }
        return i
    }

    static func mapIncr(_ v: RedisValue, key: String, _ node: RedisNode) throws -> Int64 {
        switch v {
        case .integer(let i): return i
        case .null: throw CacheError.missingKey(key)
        case .error(let m) where m.contains("not an integer") || m.contains("overflow"):
            throw CacheError.notAnInteger(key: key)
        default: throw Self.serverError(v, node)
        }
    }

    static func mapStatus(_ v: RedisValue, _ node: RedisNode) throws {
        if case .error = v { throw Self.serverError(v, node) }
    }

    // MARK: blocking face

    /// Runs a write of `key`, dropping the key from the near cache before it is sent and again once
    /// it is answered (or failed), so that this process reads its own write.
    @inline(__always)
    private func write<R>(_ key: String, _ body: () throws -> R) rethrows -> R {
        guard let neighbours else { return try body() }
        neighbours.drop([key])
        defer { neighbours.drop([key]) }
        return try body()
    }

    /// Runs one command on a pooled connection. `idempotent`: safe to retry after a lost reply.
    private func run(_ node: RedisNode, _ op: String, _ args: [[UInt8]], idempotent: Bool) throws -> RedisValue {
        try node.pool.withConnection(operation: op, idempotent: idempotent) { try $0.run(args, operation: op) }
    }

    /// Runs `op` on a pooled connection of the node it goes to (a replica for a read, when there are
    /// replicas): the blocking executor of ``RedisOperation``.
    @inline(__always)
    private func perform<R>(_ op: RedisOperation<R>) throws -> R {
        let node = op.readsFromReplica ? readNode : primary
        let reply = try run(node, op.name, op.command, idempotent: op.idempotent)
        guard let again = op.fallback(after: reply) else { return try op.result(reply, node) }
        return try op.result(try run(node, op.name, again, idempotent: false), node)
    }

    /// GET on a pooled blocking connection (to a replica when there are replicas).
    public func get(_ key: String) throws -> StoredValue? {
        if let near { return try nearGet(near, key) }
        return try perform(.get(key))
    }

    /// One MGET on a pooled blocking connection (to a replica when there are replicas).
    public func getMany(_ keys: [String]) throws -> [String: StoredValue] {
        if keys.isEmpty { return [:] }
        if let near { return try nearGetMany(near, keys) }
        let n = readNode
        return try Self.mapMGet(try run(n, "MGET", RedisBackend.mgetCommand(keys), idempotent: true), keys, n)
    }

    /// SET with PX (NX for `.add`) on the primary; false when `.add` found a live key.
    public func set(_ key: String, _ value: StoredValue, expiry: CacheExpiry, mode: SetMode) throws -> Bool {
        try write(key) { try perform(.set(key, value, expiry, mode)) }
    }

    /// All the SETs pipelined in one round trip on the primary; returns the keys that failed.
    public func setMany(_ items: [(key: String, value: StoredValue)], expiry: CacheExpiry) throws -> [String] {
        if items.isEmpty { return [] }
        neighbours?.drop(items.map(\.key))
        defer { neighbours?.drop(items.map(\.key)) }
        let replies = try primary.pool.withConnection(operation: "SET", idempotent: true) {
            try $0.pipeline(items.map { RedisBackend.setCommand($0.key, $0.value, expiry, .set) }, operation: "SET")
        }
        return zip(items, replies).compactMap { item, reply in (try? Self.mapSet(reply, primary)) == true ? nil : item.key }
    }

    /// DEL on the primary; whether the key existed.
    public func delete(_ key: String) throws -> Bool { try write(key) { try perform(.delete(key)) } }

    /// One DEL of every key on the primary.
    public func deleteMany(_ keys: [String]) throws {
        if keys.isEmpty { return }
        neighbours?.drop(keys)
        defer { neighbours?.drop(keys) }
        _ = try Self.mapInteger(try run(primary, "DEL", RedisBackend.delCommand(keys), idempotent: true), primary)
    }

    /// INCRBY on the primary, atomic; a missing key is `CacheError.missingKey`.
    public func incr(_ key: String, by delta: Int64) throws -> Int64 { try write(key) { try perform(.incr(key, delta)) } }

    /// PEXPIRE (or PERSIST for `.never`) on the primary; whether the key existed.
    public func touch(_ key: String, expiry: CacheExpiry) throws -> Bool { try write(key) { try perform(.touch(key, expiry)) } }

    /// The compare-and-delete script on the primary; whether it deleted the key.
    public func deleteIfEqual(_ key: String, _ expected: StoredValue) throws -> Bool {
        try write(key) { try perform(.deleteIfEqual(key, expected)) }
    }

    /// EXISTS (on a replica when there are replicas).
    public func hasKey(_ key: String) throws -> Bool {
        if let near { return try nearGet(near, key) != nil }
        return try perform(.hasKey(key))
    }

    /// FLUSHDB on the primary's database (every key in it, as Django's RedisCache.clear does).
    public func clear() throws {
        neighbours?.flush()
        defer { neighbours?.flush() }
        try Self.mapStatus(try run(primary, "FLUSHDB", RedisBackend.flushCommand, idempotent: true), primary)
    }

    /// Closes idle blocking connections and the async connections; the next command reconnects.
    public func close() {
        stopListening()
        for n in [primary] + replicas {
            n.pool.close()
            for c in n.connections { c.shutdown() }
            n.pool.target.sentinel?.stopWatching()
        }
    }

    // MARK: async face

    /// GET on a loop-driven connection, pipelined with whatever else was sent in the same turn.
    /// Inlined into the protocol witness, so that the witness is not an async frame of its own on
    /// the path (see ``RedisAsyncConnection/command(_:idempotent:)``).
    @inline(__always)
    public func asyncGet(_ key: String) async throws -> StoredValue? {
        if let near { return try await nearGetAsync(near, key) }
        return try await performAsync(.get(key))
    }

    /// Runs `op` on the loop-driven connection of the node it goes to: the async executor of
    /// ``RedisOperation``. An idempotent operation is sent once more if the server closed the
    /// connection under it (see ``RedisAsyncConnection/command(_:idempotent:)``).
    @inline(__always)
    private func performAsync<R>(_ op: RedisOperation<R>) async throws -> R {
        let node = op.readsFromReplica ? readNode : primary
        let reply = try await node.connection.command(op.command, idempotent: op.idempotent)
        guard let again = op.fallback(after: reply) else { return try op.result(reply, node) }
        return try op.result(try await node.connection.command(again), node)
    }

    /// One idempotent command on `node`'s loop-driven connection, sent once more if the server closed
    /// the connection under it: the same commands the blocking face retries (``run(_:_:_:idempotent:)``);
    /// see ``RedisAsyncConnection/command(_:idempotent:)``.
    @inline(__always)
    private static func idempotent(_ node: RedisNode, _ command: [[UInt8]]) async throws -> RedisValue {
        try await node.connection.command(command, idempotent: true)
    }

    /// One MGET on a loop-driven connection.
    public func asyncGetMany(_ keys: [String]) async throws -> [String: StoredValue] {
        if keys.isEmpty { return [:] }
        if let near { return try await nearGetManyAsync(near, keys) }
        let n = readNode
        return try Self.mapMGet(try await Self.idempotent(n, RedisBackend.mgetCommand(keys)), keys, n)
    }

    /// SET with PX (NX for `.add`) on the primary's loop-driven connection.
    public func asyncSet(_ key: String, _ value: StoredValue, expiry: CacheExpiry, mode: SetMode) async throws -> Bool {
        neighbours?.drop([key])
        defer { neighbours?.drop([key]) }
        return try await performAsync(.set(key, value, expiry, mode))
    }

    /// All the SETs in one write on the primary's loop-driven connection; returns the keys that failed.
    public func asyncSetMany(_ items: [(key: String, value: StoredValue)], expiry: CacheExpiry) async throws -> [String] {
        if items.isEmpty { return [] }
        neighbours?.drop(items.map(\.key))
        defer { neighbours?.drop(items.map(\.key)) }
        let commands = items.map { RedisBackend.setCommand($0.key, $0.value, expiry, .set) }
        let replies = try await primary.connection.pipeline(commands, idempotent: true)
        return zip(items, replies).compactMap { item, reply in (try? Self.mapSet(reply, primary)) == true ? nil : item.key }
    }

    /// DEL on the primary's loop-driven connection; whether the key existed.
    public func asyncDelete(_ key: String) async throws -> Bool {
        neighbours?.drop([key])
        defer { neighbours?.drop([key]) }
        return try await performAsync(.delete(key))
    }

    /// One DEL of every key on the primary's loop-driven connection.
    public func asyncDeleteMany(_ keys: [String]) async throws {
        if keys.isEmpty { return }
        neighbours?.drop(keys)
        defer { neighbours?.drop(keys) }
        _ = try Self.mapInteger(try await Self.idempotent(primary, RedisBackend.delCommand(keys)), primary)
    }

    /// INCRBY on the primary's loop-driven connection: atomic in the async face too.
    public func asyncIncr(_ key: String, by delta: Int64) async throws -> Int64 {
        neighbours?.drop([key])
        defer { neighbours?.drop([key]) }
        return try await performAsync(.incr(key, delta))
    }

    /// PEXPIRE (or PERSIST) on the primary's loop-driven connection; whether the key existed.
    public func asyncTouch(_ key: String, expiry: CacheExpiry) async throws -> Bool {
        neighbours?.drop([key])
        defer { neighbours?.drop([key]) }
        return try await performAsync(.touch(key, expiry))
    }

    /// The compare-and-delete script on the primary's loop-driven connection.
    public func asyncDeleteIfEqual(_ key: String, _ expected: StoredValue) async throws -> Bool {
        neighbours?.drop([key])
        defer { neighbours?.drop([key]) }
        return try await performAsync(.deleteIfEqual(key, expected))
    }

    /// EXISTS on a loop-driven connection.
    public func asyncHasKey(_ key: String) async throws -> Bool {
        if let near { return try await nearGetAsync(near, key) != nil }
        return try await performAsync(.hasKey(key))
    }

    /// FLUSHDB on the primary's loop-driven connection (the whole database).
    public func asyncClear() async throws {
        neighbours?.flush()
        defer { neighbours?.flush() }
        try Self.mapStatus(try await Self.idempotent(primary, RedisBackend.flushCommand), primary)
    }
}
