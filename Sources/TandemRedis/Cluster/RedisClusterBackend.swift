import Logging
@_spi(Backend) import TandemCache
import TandemLoop

#if canImport(Glibc)
import Glibc
#endif

/// Redis Cluster, Django's RedisCache semantics: the backend a `redis+cluster://` location makes.
///
/// Every command goes to the primary that serves its key's slot (CRC16, hash tags); `MOVED` updates
/// the slot map and is followed, `ASK` is followed with `ASKING` on the target, `TRYAGAIN` and
/// `CLUSTERDOWN` are retried with backoff within the command timeout (at most five redirections a
/// command). Many-key operations are split by node and pipelined per node (one round trip each,
/// the nodes in parallel on the async face), then answered as one; a key redirected in the middle
/// of a migration is retried on its own. `incr` stays one atomic script on the key's node; `clear`
/// flushes every primary. With `READ_FROM_REPLICAS`, `get`, `get_many` and `has_key` go to the
/// replicas of their slot's primary (a replica that cannot be reached sends the read to the primary).
final class RedisClusterBackend: CacheBackend {
    let cluster: RedisCluster

    init(cluster: RedisCluster) {
        self.cluster = cluster
    }

    deinit { close() }

    var keyStrictness: KeyStrictness { .lenient }
    var waitsOnIO: Bool { true }
    var databaseSystem: String? { "redis" }
    var backendDescription: String { cluster.description }

    func close() { cluster.close() }

    /// The primary serving `key`'s slot, as the map knows it now (nil before the map is known: the
    /// backend-wide breaker), so that a dead node opens only its own breaker.
    func breakerScope(forKey key: String) -> String? {
        cluster.knownNode(forSlot: ClusterSlot.of(key.bytes))?.endpoint.description
    }

    // MARK: routing, blocking face

    /// Runs `command` for `key` on the node serving its slot (a replica for a read, when the cluster
    /// reads from replicas), following redirections.
    private func run(_ key: String, _ op: String, _ command: [[UInt8]], idempotent: Bool, reading: Bool = false) throws -> (RedisValue, RedisNode) {
        let slot = ClusterSlot.of(key.bytes)
        var route = ClusterRoute(cluster: cluster, node: try cluster.node(forSlot: slot, reading: reading))
        while true {
            let asking = route.asking
            let reply: RedisValue
            do {
                reply = try reaching { try route.node.pool.withConnection(operation: op, idempotent: idempotent) { conn in
                    asking ? try conn.pipeline([["ASKING".bytes], command], operation: op)[1] : try conn.run(command, operation: op)
                } }
            } catch let error as CacheError where Self.replicaUnreachable(route.node, error) {
                route = ClusterRoute(cluster: cluster, node: try cluster.node(forSlot: slot))
                continue
            }
            switch route.next(after: reply) {
            case .done: return (reply, route.node)
            case .again: continue
            case .againAfter(let nanos): usleep(UInt32(min(nanos / 1000, UInt64(UInt32.max))))
            }
        }
    }

    /// True when a read-only replica node could not be reached: the read goes to the primary.
    /// The fallback is logged (a warning, at most once every 10 s per replica): reads that should
    /// spread over replicas load the primary.
    private static func replicaUnreachable(_ node: RedisNode, _ error: CacheError) -> Bool {
        guard node.readsOnly, error.code == .connectionFailed else { return false }
        guard node.shouldLogFallback() else { return true }
        logger.warning("redis cluster replica unreachable; the read goes to the primary",
                       metadata: ["replica": "\(node.endpoint.description)", "error": "\(error)"])
        return true
    }

    private static let logger = Logger(label: "tandem.redis")

    /// Runs `body`, asking for a fresh slot map soon when a node cannot be reached (it may have
    /// failed over).
    private func reaching<R>(_ body: () throws -> R) throws -> R {
        do { return try body() } catch {
            cluster.refreshSoon()
            throw error
        }
    }

    private func reaching<R>(_ body: () async throws -> R) async throws -> R {
        do { return try await body() } catch {
            cluster.refreshSoon()
            throw error
        }
    }

    /// Runs `op` on the node serving its key's slot, following redirections: the blocking executor
    /// of ``RedisOperation`` on a cluster.
    private func perform<R>(_ op: RedisOperation<R>) throws -> R {
        let (reply, node) = try run(op.key, op.name, op.command, idempotent: op.idempotent, reading: op.readsFromReplica)
        guard let again = op.fallback(after: reply) else { return try op.result(reply, node) }
        let (second, at) = try run(op.key, op.name, again, idempotent: false)
        return try op.result(second, at)
    }

    /// Groups keys by the node serving their slot (asking for the map when it is not known); for a
    /// read, by replica when the cluster reads from replicas.
    private func byNode<T>(_ items: [T], reading: Bool = false, key: (T) -> String) throws -> [(RedisNode, [T])] {
        var groups: [ObjectIdentifier: (RedisNode, [T])] = [:]
        var order: [ObjectIdentifier] = []
        for item in items {
            let node = try cluster.node(forSlot: ClusterSlot.of(key(item).bytes), reading: reading)
            let id = ObjectIdentifier(node)
            if groups[id] == nil { order.append(id); groups[id] = (node, []) }
            groups[id]?.1.append(item)
        }
        return order.compactMap { groups[$0] }
    }

    /// One pipeline of `commands` on `node`; nil replies for a node that failed are not possible: the
    /// whole call throws.
    private func pipeline(_ node: RedisNode, _ op: String, _ commands: [[[UInt8]]]) throws -> [RedisValue] {
        try reaching { try node.pool.withConnection(operation: op, idempotent: true) { try $0.pipeline(commands, operation: op) } }
    }

    func get(_ key: String) throws -> StoredValue? { try perform(.get(key)) }

    func getMany(_ keys: [String]) throws -> [String: StoredValue] {
        var out: [String: StoredValue] = [:]
        for (readNode, group) in try byNode(keys, reading: true, key: { $0 }) {
            var node = readNode
            let commands = group.map { RedisBackend.getCommand($0) }
            let replies: [RedisValue]
            do {
                replies = try pipeline(node, "GET", commands)
            } catch let error as CacheError where Self.replicaUnreachable(node, error) {
                node = try cluster.node(forSlot: ClusterSlot.of(group[0].bytes))  // a replica serves one primary's slots
                replies = try pipeline(node, "GET", commands)
            }
            for (key, reply) in zip(group, replies) {
                let value = ClusterRedirect(reply) == nil ? try RedisBackend.mapGet(reply, node) : try get(key)
                if let value { out[key] = value }
            }
        }
        return out
    }

    func set(_ key: String, _ value: StoredValue, expiry: CacheExpiry, mode: SetMode) throws -> Bool {
        try perform(.set(key, value, expiry, mode))
    }

    func setMany(_ items: [(key: String, value: StoredValue)], expiry: CacheExpiry) throws -> [String] {
        var failed: [String] = []
        for (node, group) in try byNode(items, key: { $0.key }) {
            let replies = try pipeline(node, "SET", group.map { RedisBackend.setCommand($0.key, $0.value, expiry, .set) })
            for (item, reply) in zip(group, replies) {
                let ok = ClusterRedirect(reply) == nil
                    ? (try? RedisBackend.mapSet(reply, node)) == true
                    : (try? set(item.key, item.value, expiry: expiry, mode: .set)) == true
                if !ok { failed.append(item.key) }
            }
        }
        return failed
    }

    func delete(_ key: String) throws -> Bool { try perform(.delete(key)) }

    func deleteMany(_ keys: [String]) throws {
        for (node, group) in try byNode(keys, key: { $0 }) {
            let replies = try pipeline(node, "DEL", group.map { RedisBackend.delCommand([$0]) })
            for (key, reply) in zip(group, replies) {
                if ClusterRedirect(reply) != nil { _ = try delete(key) } else { _ = try RedisBackend.mapInteger(reply, node) }
            }
        }
    }

    func incr(_ key: String, by delta: Int64) throws -> Int64 { try perform(.incr(key, delta)) }

    func touch(_ key: String, expiry: CacheExpiry) throws -> Bool { try perform(.touch(key, expiry)) }

    func deleteIfEqual(_ key: String, _ expected: StoredValue) throws -> Bool { try perform(.deleteIfEqual(key, expected)) }

    func hasKey(_ key: String) throws -> Bool { try perform(.hasKey(key)) }

    /// FLUSHDB on every primary: the whole cluster's keys, as Django's clear does on one server.
    func clear() throws {
        for node in try cluster.primaries() {
            let reply = try node.pool.withConnection(operation: "FLUSHDB", idempotent: true) { try $0.run(RedisBackend.flushCommand, operation: "FLUSHDB") }
            try RedisBackend.mapStatus(reply, node)
        }
    }

    // MARK: async face

    /// ``run(_:_:_:idempotent:reading:)`` on the loop-driven connections: the same route, and the same
    /// commands sent once more after a connection the server closed under them (`idempotent`).
    private func asyncRun(_ key: String, _ command: [[UInt8]], idempotent: Bool, reading: Bool = false) async throws -> (RedisValue, RedisNode) {
        let slot = ClusterSlot.of(key.bytes)
        var route = ClusterRoute(cluster: cluster, node: try await cluster.asyncNode(forSlot: slot, reading: reading))
        while true {
            let (node, asking) = (route.node, route.asking)
            let reply: RedisValue
            do {
                reply = try await reaching {
                    asking ? try await node.connection.pipeline([["ASKING".bytes], command], idempotent: idempotent)[1]
                        : try await node.connection.command(command, idempotent: idempotent)
                }
            } catch let error as CacheError where Self.replicaUnreachable(node, error) {
                route = ClusterRoute(cluster: cluster, node: try await cluster.asyncNode(forSlot: slot))
                continue
            }
            switch route.next(after: reply) {
            case .done: return (reply, route.node)
            case .again: continue
            case .againAfter(let nanos): try await Task.sleep(for: .nanoseconds(Int64(nanos)))
            }
        }
    }

    /// The async executor of ``RedisOperation`` on a cluster: ``perform(_:)`` on the loop-driven
    /// connections.
    private func performAsync<R>(_ op: RedisOperation<R>) async throws -> R {
        let (reply, node) = try await asyncRun(op.key, op.command, idempotent: op.idempotent, reading: op.readsFromReplica)
        guard let again = op.fallback(after: reply) else { return try op.result(reply, node) }
        let (second, at) = try await asyncRun(op.key, again, idempotent: false)
        return try op.result(second, at)
    }

    /// Groups keys by node without blocking: a missing map is fetched on a bridge thread first.
    private func asyncByNode<T: Sendable>(_ items: [T], reading: Bool = false, key: (T) -> String) async throws -> [(RedisNode, [T])] {
        if let first = items.first, cluster.knownNode(forSlot: ClusterSlot.of(key(first).bytes)) == nil {
            _ = try await cluster.asyncNode(forSlot: ClusterSlot.of(key(first).bytes))
        }
        var groups: [ObjectIdentifier: (RedisNode, [T])] = [:]
        var order: [ObjectIdentifier] = []
        for item in items {
            let slot = ClusterSlot.of(key(item).bytes)
            let node: RedisNode
            if let known = cluster.knownNode(forSlot: slot, reading: reading) {
                node = known
            } else {
                node = try await cluster.asyncNode(forSlot: slot, reading: reading)
            }
            let id = ObjectIdentifier(node)
            if groups[id] == nil { order.append(id); groups[id] = (node, []) }
            groups[id]?.1.append(item)
        }
        return order.compactMap { groups[$0] }
    }

    /// Runs `work` for every group at once (one pipeline per node) and collects the results in order.
    private func eachNode<T: Sendable, R: Sendable>(_ groups: [(RedisNode, [T])],
                                                    _ work: @escaping @Sendable (RedisNode, [T]) async throws -> R) async throws -> [R] {
        try await withThrowingTaskGroup(of: (Int, R).self) { group in
            for (i, (node, items)) in groups.enumerated() {
                group.addTask { (i, try await work(node, items)) }
            }
            var out = [R?](repeating: nil, count: groups.count)
            for try await (i, r) in group { out[i] = r }
            return out.compactMap { $0 }
        }
    }

    private func asyncPipeline(_ node: RedisNode, _ commands: [[[UInt8]]]) async throws -> [RedisValue] {
        try await reaching { try await node.connection.pipeline(commands, idempotent: true) }
    }

    func asyncGet(_ key: String) async throws -> StoredValue? { try await performAsync(.get(key)) }

    func asyncGetMany(_ keys: [String]) async throws -> [String: StoredValue] {
        let parts = try await eachNode(try await asyncByNode(keys, reading: true, key: { $0 })) { readNode, group in
            var node = readNode
            let commands = group.map { RedisBackend.getCommand($0) }
            let replies: [RedisValue]
            do {
                replies = try await self.asyncPipeline(node, commands)
            } catch let error as CacheError where Self.replicaUnreachable(node, error) {
                node = try await self.cluster.asyncNode(forSlot: ClusterSlot.of(group[0].bytes))  // a replica serves one primary's slots
                replies = try await self.asyncPipeline(node, commands)
            }
            var out: [String: StoredValue] = [:]
            for (key, reply) in zip(group, replies) {
                let value = ClusterRedirect(reply) == nil ? try RedisBackend.mapGet(reply, node) : try await self.asyncGet(key)
                if let value { out[key] = value }
            }
            return out
        }
        return parts.reduce(into: [:]) { $0.merge($1) { a, _ in a } }
    }

    func asyncSet(_ key: String, _ value: StoredValue, expiry: CacheExpiry, mode: SetMode) async throws -> Bool {
        try await performAsync(.set(key, value, expiry, mode))
    }

    func asyncSetMany(_ items: [(key: String, value: StoredValue)], expiry: CacheExpiry) async throws -> [String] {
        let pairs = items.map { KeyValue(key: $0.key, value: $0.value) }
        let parts = try await eachNode(try await asyncByNode(pairs, key: { $0.key })) { node, group in
            let replies = try await self.asyncPipeline(node, group.map { RedisBackend.setCommand($0.key, $0.value, expiry, .set) })
            var failed: [String] = []
            for (item, reply) in zip(group, replies) {
                let ok: Bool
                if ClusterRedirect(reply) == nil {
                    ok = (try? RedisBackend.mapSet(reply, node)) == true
                } else {
                    ok = (try? await self.asyncSet(item.key, item.value, expiry: expiry, mode: .set)) == true
                }
                if !ok { failed.append(item.key) }
            }
            return failed
        }
        return parts.flatMap { $0 }
    }

    func asyncDelete(_ key: String) async throws -> Bool { try await performAsync(.delete(key)) }

    func asyncDeleteMany(_ keys: [String]) async throws {
        _ = try await eachNode(try await asyncByNode(keys, key: { $0 })) { node, group in
            let replies = try await self.asyncPipeline(node, group.map { RedisBackend.delCommand([$0]) })
            for (key, reply) in zip(group, replies) {
                if ClusterRedirect(reply) != nil { _ = try await self.asyncDelete(key) } else { _ = try RedisBackend.mapInteger(reply, node) }
            }
            return 0
        }
    }

    func asyncIncr(_ key: String, by delta: Int64) async throws -> Int64 { try await performAsync(.incr(key, delta)) }

    func asyncTouch(_ key: String, expiry: CacheExpiry) async throws -> Bool { try await performAsync(.touch(key, expiry)) }

    func asyncDeleteIfEqual(_ key: String, _ expected: StoredValue) async throws -> Bool {
        try await performAsync(.deleteIfEqual(key, expected))
    }

    func asyncHasKey(_ key: String) async throws -> Bool { try await performAsync(.hasKey(key)) }

    func asyncClear() async throws {
        let nodes: [RedisNode]
        if cluster.knownNode(forSlot: 0) == nil {
            nodes = try await Bridge.offload { () throws in try self.cluster.primaries() }
        } else {
            nodes = try cluster.primaries()
        }
        for node in nodes {
            try RedisBackend.mapStatus(try await node.connection.command(RedisBackend.flushCommand), node)
        }
    }
}

/// A key and its value, Sendable, for the async many-key split.
private struct KeyValue: Sendable {
    let key: String
    let value: StoredValue
}
