/// The async face of a ``Cache``: the same operations and semantics, as `async` functions that never
/// block a thread. Get it from ``Cache/async``.
public struct AsyncCache: Sendable {
    let core: CacheCore

    /// The alias of the cache.
    public var alias: String { core.alias }

    /// Returns the value of `key`, or nil when it is missing; see ``Cache/get(_:version:file:line:)``.
    public func get<V: CacheValue>(_ key: String, version: Int? = nil) async throws -> V? {
        let k = try core.key(key, version)
        return try core.decode(try await core.asyncGet(k), key: k)
    }

    /// Returns the value of `key`, or `default` when it is missing.
    public func get<V: CacheValue>(_ key: String, default defaultValue: V, version: Int? = nil) async throws -> V {
        try await get(key, version: version) ?? defaultValue
    }

    /// Stores `value`; see ``Cache/set(_:_:timeout:version:file:line:)``.
    public func set<V: CacheValue>(_ key: String, _ value: V, timeout: CacheTimeout = .default, version: Int? = nil) async throws {
        let k = try core.key(key, version)
        let v = try core.encode(value, key: k)
        try await core.runAsync(.set, key: k, fallback: ()) {
            switch core.resolve(timeout) {
            case .expired: _ = try await core.backend.asyncDelete(k)
            case .expiry(let e): _ = try await core.backend.asyncSet(k, v, expiry: e, mode: .set)
            }
            core.metrics.sets.increment()
        }
    }

    /// Stores `value` only if `key` does not exist; see ``Cache/add(_:_:timeout:version:file:line:)``.
    @discardableResult
    public func add<V: CacheValue>(_ key: String, _ value: V, timeout: CacheTimeout = .default, version: Int? = nil) async throws -> Bool {
        let k = try core.key(key, version)
        let v = try core.encode(value, key: k)
        return try await core.runAsync(.add, key: k, fallback: false) {
            switch core.resolve(timeout) {
            case .expired: return try await !core.backend.asyncHasKey(k)
            case .expiry(let e): return try await core.backend.asyncSet(k, v, expiry: e, mode: .add)
            }
        }
    }

    /// Returns the value of `key`, or adds `makeDefault()` and re-reads; see ``Cache/getOrSet(_:timeout:version:lock:earlyRefresh:file:line:_:)``.
    public func getOrSet<V: CacheValue>(
        _ key: String, timeout: CacheTimeout = .default, version: Int? = nil, lock: Bool? = nil,
        earlyRefresh: Double? = nil, _ makeDefault: () async throws -> V
    ) async throws -> V {
        let made = try core.key(key, version)
        var procedure = GetOrSet<V>(core: core, made: made, timeout: timeout, beta: core.earlyRefreshBeta(earlyRefresh),
                                    lock: core.stampedeLock(lock), waiterCancelled: .throwCancellation)
        var step = procedure.start()
        do {
            while true {
                switch step {
                case .readWithMetadata(let made, let metaKey):
                    step = try procedure.readWithMetadata(try await core.runAsync(.getMany, key: made, fallback: [:]) {
                        try await core.backend.asyncGetMany([made, metaKey])
                    })
                case .read:
                    step = procedure.read(try await get(key, version: version))
                case .joinFlight:
                    step = procedure.joined(core.flights.join(made))
                case .wait(let flight):
                    step = try procedure.flightEnded(await flight.wait())
                case .readShared:
                    step = try procedure.readShared(try await core.asyncGet(made))
                case .takeLock(let lockKey, let token, let seconds):
                    step = procedure.lockTaken((try? await core.runAsync(.add, key: lockKey, fallback: true) {
                        try await core.backend.asyncSet(lockKey, token, expiry: .after(seconds: seconds), mode: .add)
                    }) ?? true)
                case .sleep(let interval):
                    try await Task.sleep(for: interval)
                    step = procedure.slept()
                case .produce:
                    let clock = ContinuousClock()
                    let start = clock.now
                    let fresh = try await makeDefault()
                    step = try procedure.produced(fresh, took: clock.now - start)
                case .store(let value, let mode, let expiry):
                    step = procedure.stored(try await core.runAsync(mode == .set ? .set : .add, key: made, fallback: false) {
                        try await core.backend.asyncSet(made, value, expiry: expiry, mode: mode)
                    })
                case .storeMetadata(let metaKey, let meta, let expiry):
                    _ = try? await core.backend.asyncSet(metaKey, meta, expiry: expiry, mode: .set)
                    step = procedure.metadataStored()
                case .add(let fresh):
                    try await add(key, fresh, timeout: timeout, version: version)
                    step = procedure.added()
                case .releaseLock(let held):
                    await core.release(held)
                    step = procedure.released()
                case .finish(let flight, let outcome, let value):
                    core.flights.finish(made, flight, outcome)
                    return value
                case .done(let value):
                    return value
                }
            }
        } catch {
            let (held, flight, outcome) = procedure.abandon(error, cancelled: Task.isCancelled)
            if let held { await core.release(held) }
            if let flight { core.flights.finish(made, flight, outcome) }
            throw error
        }
    }

    /// Returns the values of the keys that exist; see ``Cache/getMany(_:version:file:line:)``.
    public func getMany<V: CacheValue>(_ keys: [String], version: Int? = nil) async throws -> [String: V] {
        let ks = try core.keys(keys, version)
        return try await core.runAsync(.getMany, fallback: [:]) { try core.decodeMany(try await core.backend.asyncGetMany(ks.map(\.made)), ks) }
    }

    /// Stores every item; returns the keys that failed; see ``Cache/setMany(_:timeout:version:file:line:)``.
    @discardableResult
    public func setMany<V: CacheValue>(_ items: [String: V], timeout: CacheTimeout = .default, version: Int? = nil) async throws -> [String] {
        let (ks, encoded) = try core.encodeMany(items, version)
        return try await core.runAsync(.setMany, fallback: ks.map(\.user)) {
            core.metrics.sets.increment(by: Int64(encoded.count))
            switch core.resolve(timeout) {
            case .expired:
                try await core.backend.asyncDeleteMany(encoded.map(\.key))
                return []
            case .expiry(let e):
                let failed = Set(try await core.backend.asyncSetMany(encoded, expiry: e))
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
    public func delete(_ key: String, version: Int? = nil, failOpen: Bool = true) async throws -> Bool {
        let k = try core.key(key, version)
        return try await core.runAsync(.delete, key: k, fallback: failOpen ? false : nil) {
            core.metrics.deletes.increment()
            return try await core.backend.asyncDelete(k)
        }
    }

    /// Deletes every key.
    public func deleteMany(_ keys: [String], version: Int? = nil) async throws {
        let ks = try core.keys(keys, version)
        try await core.runAsync(.deleteMany, fallback: ()) {
            core.metrics.deletes.increment(by: Int64(ks.count))
            try await core.backend.asyncDeleteMany(ks.map(\.made))
        }
    }

    /// Adds `delta` atomically; see ``Cache/incr(_:by:version:file:line:)``.
    @discardableResult
    public func incr(_ key: String, by delta: Int = 1, version: Int? = nil) async throws -> Int {
        let k = try core.key(key, version)
        return Int(try await core.runAsync(.incr, key: k) { try await core.backend.asyncIncr(k, by: Int64(delta)) })
    }

    /// Subtracts `delta`; see ``Cache/incr(_:by:version:file:line:)``.
    @discardableResult
    public func decr(_ key: String, by delta: Int = 1, version: Int? = nil) async throws -> Int {
        try await incr(key, by: try CacheCore.negated(delta, key: key), version: version)
    }

    /// Sets a new timeout on `key`; see ``Cache/touch(_:timeout:version:file:line:)``.
    @discardableResult
    public func touch(_ key: String, timeout: CacheTimeout = .default, version: Int? = nil) async throws -> Bool {
        let k = try core.key(key, version)
        return try await core.runAsync(.touch, key: k, fallback: false) {
            switch core.resolve(timeout) {
            case .expired: return try await core.backend.asyncDelete(k)
            case .expiry(let e): return try await core.backend.asyncTouch(k, expiry: e)
            }
        }
    }

    /// Returns whether `key` exists (a stored nil counts).
    public func hasKey(_ key: String, version: Int? = nil) async throws -> Bool {
        let k = try core.key(key, version)
        return try await core.runAsync(.hasKey, key: k, fallback: false) { try await core.backend.asyncHasKey(k) }
    }

    /// Moves `key` to `version + delta`; see ``Cache/incrVersion(_:by:version:file:line:)``.
    @discardableResult
    public func incrVersion(_ key: String, by delta: Int = 1, version: Int? = nil) async throws -> Int {
        let from = version ?? core.keys.defaultVersion
        let old = try core.key(key, from)
        let to = try CacheCore.shifted(version: from, by: delta, key: key)
        let new = try core.key(key, to)
        guard let value = try await core.runAsync(.get, key: old, { try await core.backend.asyncGet(old) }) else {
            throw CacheError.missingKey(key)
        }
        try await core.runAsync(.set) {
            if case .expiry(let e) = core.resolve(.default) { _ = try await core.backend.asyncSet(new, value, expiry: e, mode: .set) }
            _ = try await core.backend.asyncDelete(old)
        }
        return to
    }

    /// Moves `key` to `version - delta`; see ``Cache/incrVersion(_:by:version:file:line:)``.
    @discardableResult
    public func decrVersion(_ key: String, by delta: Int = 1, version: Int? = nil) async throws -> Int {
        try await incrVersion(key, by: try CacheCore.negated(delta, key: key), version: version)
    }

    /// Removes everything from the backend; see ``Cache/clear(file:line:)``.
    public func clear() async throws {
        try await core.runAsync(.clear) { try await core.backend.asyncClear() }
    }
}
