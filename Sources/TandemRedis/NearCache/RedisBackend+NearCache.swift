@_spi(Backend) import TandemCache

/// The reads the near cache answers, for both faces: a hit comes from process memory; a miss reads
/// the value and its remaining lifetime in one round trip (in tracking mode after
/// `CLIENT TRACKING ON REDIRECT`, so that the server tells the invalidation connection when the key
/// changes) and keeps it if no invalidation crossed it.
extension RedisBackend {
    /// Server `i` (0: the primary, then the replicas).
    func node(_ i: Int) -> RedisNode { i == 0 ? primary : replicas[i - 1] }

    /// Where a read goes: a random replica, or the primary when there is none.
    func readServer() -> Int { replicas.isEmpty ? 0 : Int.random(in: 1...replicas.count) }

    private static func trackingCommand(_ redirect: Int64) -> [[UInt8]] {
        ["CLIENT".bytes, "TRACKING".bytes, "ON".bytes, "REDIRECT".bytes, String(redirect).bytes]
    }

    private static func pttlCommand(_ key: String) -> [[UInt8]] { ["PTTL".bytes, key.bytes] }

    /// The commands of a near-cache read of `keys` (each key's GET and PTTL), after the tracking
    /// command in tracking mode.
    private func nearReadCommands(_ keys: [String], redirect: Int64) -> [[[UInt8]]] {
        var commands: [[[UInt8]]] = []
        commands.reserveCapacity(keys.count * 2 + 1)
        if near?.settings.mode == .tracking { commands.append(Self.trackingCommand(redirect)) }
        for k in keys {
            commands.append(Self.getCommand(k))
            commands.append(Self.pttlCommand(k))
        }
        return commands
    }

    /// Reads the replies of ``nearReadCommands(_:redirect:)``, keeps what may be kept and returns
    /// the values found. A refused tracking command keeps nothing (and, when the server does not know
    /// the invalidation connection, has it make a new one).
    private func finishNearRead(_ near: NearCache, _ marks: [NearMark], _ replies: [RedisValue], server: Int) throws -> [String: StoredValue] {
        let node = node(server)
        var keep = true
        var offset = 0
        if near.settings.mode == .tracking {
            offset = 1
            if case .error(let message) = replies[0] {
                keep = false
                if message.contains("does not exist") { listeners[server].restart() }
            }
        }
        var out: [String: StoredValue] = [:]
        for (i, mark) in marks.enumerated() {
            let value: StoredValue?
            do {
                value = try Self.mapGet(replies[offset + 2 * i], node)
            } catch {
                for m in marks { near.forget(m) }
                throw error
            }
            if let value { out[mark.key] = value }
            if keep, case .integer(let ttl) = replies[offset + 2 * i + 1] {
                near.store(mark, value: value, remainingMilliseconds: ttl)
            } else {
                near.forget(mark)
            }
        }
        return out
    }

    /// Marks for `keys` on `server`, or nil (and the invalidation connection started) while the
    /// server's invalidation connection is not subscribed. Also nil when the marks name different
    /// invalidation connections (it reconnected while they were taken: the keys are in different
    /// shards): one read turns tracking on for one of them, so none of the replies is kept.
    private func marks(_ near: NearCache, _ keys: [String], server: Int) -> [NearMark]? {
        var marks: [NearMark] = []
        marks.reserveCapacity(keys.count)
        for k in keys {
            let m = near.mark(k, server: server)
            if let m { marks.append(m) }
            guard let m, m.redirect == marks[0].redirect else {
                for m in marks { near.forget(m) }
                listeners[server].start()
                return nil
            }
        }
        return marks
    }

    /// The near cache's answer for `keys`: the values found locally, and the keys it does not hold.
    private func lookUp(_ near: NearCache, _ keys: [String]) -> (found: [String: StoredValue], missing: [String]) {
        var found: [String: StoredValue] = [:]
        var missing: [String] = []
        for k in keys {
            switch near.lookup(k) {
            case .hit(let v): if let v { found[k] = v }
            case .miss: missing.append(k)
            }
        }
        return (found, missing)
    }

    // MARK: blocking face

    /// GET and MGET through the near cache, on the calling thread.
    func nearGetMany(_ near: NearCache, _ keys: [String]) throws -> [String: StoredValue] {
        var (found, missing) = lookUp(near, keys)
        if missing.isEmpty { return found }
        for (k, v) in try nearFetch(near, missing) { found[k] = v }
        return found
    }

    /// Reads `keys` (not in the near cache) and keeps what may be kept. In tracking mode the read
    /// goes through the loop's connection, whose loss the loop sees at once (so that nothing it read
    /// is kept longer than the server tracks it); in broadcast mode it uses a pooled connection.
    private func nearFetch(_ near: NearCache, _ keys: [String]) throws -> [String: StoredValue] {
        let server = readServer()
        let node = node(server)
        let connection = node.connection
        let tracking = near.settings.mode == .tracking
        guard !(tracking && connection.loop.inEventLoop), let marks = marks(near, keys, server: server) else {
            return try Self.mapMGet(try node.pool.withConnection(operation: "MGET", idempotent: true) {
                try $0.run(Self.mgetCommand(keys), operation: "MGET")
            }, keys, node)
        }
        let commands = nearReadCommands(keys, redirect: marks[0].redirect)
        let replies: [RedisValue]
        do {
            if tracking {
                replies = try connection.pipelineWaiting(commands)
            } else {
                replies = try node.pool.withConnection(operation: "GET", idempotent: true) { try $0.pipeline(commands, operation: "GET") }
            }
        } catch {
            for m in marks { near.forget(m) }
            throw error
        }
        return try finishNearRead(near, marks, replies, server: server)
    }

    // MARK: async face

    /// GET and MGET through the near cache, on the loop.
    func nearGetManyAsync(_ near: NearCache, _ keys: [String]) async throws -> [String: StoredValue] {
        var (found, missing) = lookUp(near, keys)
        if missing.isEmpty { return found }
        for (k, v) in try await nearFetchAsync(near, missing) { found[k] = v }
        return found
    }

    /// Reads `keys` (not in the near cache) on the loop and keeps what may be kept.
    private func nearFetchAsync(_ near: NearCache, _ keys: [String]) async throws -> [String: StoredValue] {
        let server = readServer()
        let node = node(server)
        guard let marks = marks(near, keys, server: server) else {
            return try Self.mapMGet(try await node.connection.command(Self.mgetCommand(keys), idempotent: true), keys, node)
        }
        let replies: [RedisValue]
        do {
            replies = try await node.connection.pipeline(nearReadCommands(keys, redirect: marks[0].redirect), idempotent: true)
        } catch {
            for m in marks { near.forget(m) }
            throw error
        }
        return try finishNearRead(near, marks, replies, server: server)
    }

    /// A value through the near cache (blocking face).
    func nearGet(_ near: NearCache, _ key: String) throws -> StoredValue? {
        if case .hit(var v) = near.lookup(key) {
            v?.servedFromNearCache = true
            return v
        }
        return try nearFetch(near, [key])[key]
    }

    /// A value through the near cache (async face): a hit returns without suspending.
    func nearGetAsync(_ near: NearCache, _ key: String) async throws -> StoredValue? {
        if case .hit(var v) = near.lookup(key) {
            v?.servedFromNearCache = true
            return v
        }
        return try await nearFetchAsync(near, [key])[key]
    }

    /// Stops the invalidation connections (the near cache drops everything).
    func stopListening() {
        for l in listeners { l.stop() }
    }
}
