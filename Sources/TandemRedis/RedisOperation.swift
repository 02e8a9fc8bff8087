@_spi(Backend) import TandemCache

/// One single-key cache operation on Redis, described once for both faces and every deployment: the
/// command, the key it routes by, whether it may be sent again after a lost reply, whether a replica
/// may answer it, whether it is a script (`EVALSHA`, sent once more as `EVAL` on `NOSCRIPT`), and how
/// its reply reads. ``RedisBackend`` runs it on a pooled connection (blocking face) or on the loop
/// (async face); ``RedisClusterBackend`` does the same on the node serving the key's slot.
struct RedisOperation<Result> {
    /// The command's name in errors ("redis GET timed out").
    let name: String
    let key: String
    let command: [[UInt8]]
    /// Safe to send again after the connection failed under it (a lost reply cannot have changed
    /// anything twice).
    let idempotent: Bool
    /// A read a replica may answer (`READ_FROM_REPLICAS`, Sentinel replicas).
    let readsFromReplica: Bool
    /// An `EVALSHA`: on `NOSCRIPT`, sent once more as `EVAL` with the script's source.
    let scripted: Bool
    /// The reply as the operation's result (or the typed error it means); the node names the server.
    let result: @Sendable (RedisValue, RedisNode) throws -> Result

    /// The `EVAL` to send when a scripted operation's `EVALSHA` got `NOSCRIPT`; nil otherwise.
    func fallback(after reply: RedisValue) -> [[UInt8]]? {
        scripted ? RedisBackend.scriptFallback(command, after: reply) : nil
    }
}

extension RedisOperation where Result == StoredValue? {
    /// GET: the stored value or nil.
    static func get(_ key: String) -> Self {
        Self(name: "GET", key: key, command: RedisBackend.getCommand(key), idempotent: true, readsFromReplica: true, scripted: false,
             result: RedisBackend.mapGet)
    }
}

extension RedisOperation where Result == Bool {
    /// SET with PX (NX for `.add`): false when `.add` found a live key. SET is idempotent; SET NX is
    /// not (a lost reply cannot say whether it stored the value).
    static func set(_ key: String, _ value: StoredValue, _ expiry: CacheExpiry, _ mode: SetMode) -> Self {
        Self(name: "SET", key: key, command: RedisBackend.setCommand(key, value, expiry, mode), idempotent: mode == .set,
             readsFromReplica: false, scripted: false, result: RedisBackend.mapSet)
    }

    /// DEL: whether the key existed.
    static func delete(_ key: String) -> Self {
        Self(name: "DEL", key: key, command: RedisBackend.delCommand([key]), idempotent: false, readsFromReplica: false,
             scripted: false, result: { try RedisBackend.mapInteger($0, $1) > 0 })
    }

    /// PEXPIRE (a script that persists for `.never`): whether the key existed.
    static func touch(_ key: String, _ expiry: CacheExpiry) -> Self {
        Self(name: "PEXPIRE", key: key, command: RedisBackend.touchCommand(key, expiry), idempotent: false, readsFromReplica: false,
             scripted: true, result: { try RedisBackend.mapInteger($0, $1) == 1 })
    }

    /// The compare-and-delete script: whether it deleted the key.
    static func deleteIfEqual(_ key: String, _ expected: StoredValue) -> Self {
        Self(name: "DEL", key: key, command: RedisBackend.deleteIfEqualCommand(key, expected), idempotent: false,
             readsFromReplica: false, scripted: true, result: { try RedisBackend.mapInteger($0, $1) > 0 })
    }

    /// EXISTS: whether the key is there.
    static func hasKey(_ key: String) -> Self {
        Self(name: "EXISTS", key: key, command: RedisBackend.existsCommand(key), idempotent: true, readsFromReplica: true,
             scripted: false, result: { try RedisBackend.mapInteger($0, $1) > 0 })
    }
}

extension RedisOperation where Result == Int64 {
    /// INCRBY as one atomic script (a missing key is ``CacheError/missingKey(_:)``).
    static func incr(_ key: String, _ delta: Int64) -> Self {
        Self(name: "INCRBY", key: key, command: RedisBackend.incrCommand(key, delta), idempotent: false, readsFromReplica: false,
             scripted: true, result: { try RedisBackend.mapIncr($0, key: key, $1) })
    }
}
