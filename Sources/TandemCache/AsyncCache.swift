/// The async face of a ``Cache``: the same operations and semantics, as `async` functions that never
/// block a thread. Get it from ``Cache/async``.
public struct AsyncCache: Sendable {
    let core: CacheCore

    /// The alias of the cache.
    public var alias: String { core.alias }

    /// Returns the value of `key`, or nil when it is missing; see ``Cache/get(_:version:)``.
    public func get<V: CacheValue>(_ key: String, version: Int? = nil) async throws -> V? {
        let k = try core.key(key, version)
        return try core.decode(try await core.asyncGet(k), key: k)
    }

    /// Returns the value of `key`, or `default` when it is missing.
    public func get<V: CacheValue>(_ key: String, default defaultValue: V, version: Int? = nil) async throws -> V {
        try await get(key, version: version) ?? defaultValue
    }

    /// Stores `value`; see ``Cache/set(_:_:timeout:version:)``.
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

    /// Stores `value` only if `key` does not exist; see ``Cache/add(_:_:timeout:version:)``.
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

    /// Returns the value of `key`, or adds `makeDefault()` and re-reads; see ``Cache/getOrSet(_:timeout:version:_:)``.
    public func getOrSet<V: CacheValue>(
        _ key: String, timeout: CacheTimeout = .default, version: Int? = nil, lock: Bool? = nil,
        earlyRefresh: Double? = nil, _ makeDefault: () async throws -> V
    ) async throws -> V {
        let made = try core.key(key, version)
        let beta = core.earlyRefreshBeta(earlyRefresh)
        if let beta, let metaKey = EarlyRefresh.key(for: made) {
            let found = try await core.runAsync(.getMany, key: made, fallback: [:]) { try await core.backend.asyncGetMany([made, metaKey]) }
            if let stored = found[made], let v: V = try core.decode(stored, key: made) {
                // Early refresh: one caller recomputes before expiry; the others keep this value meanwhile.
                guard EarlyRefresh(found[metaKey])?.shouldRefresh(beta: beta) == true, let flight = core.flights.tryLead(made) else {
                    return v
                }
                var outcome = Flight.Outcome.abandoned
                defer { core.flights.finish(made, flight, outcome) }
                do {
                    let (value, fresh) = try await compute(made, metaKey, timeout, replacing: true, makeDefault)
                    outcome = .value(fresh)
                    return value
                } catch {
                    outcome = error is CancellationError || Task.isCancelled ? .abandoned : .failed(error)
                    throw error
                }
            }
        } else if let v: V = try await get(key, version: version) {
            return v
        }
        while true {
            switch core.flights.join(made) {
            case .leader(let flight):
                var outcome = Flight.Outcome.abandoned
                defer { core.flights.finish(made, flight, outcome) }
                do {
                    let (value, stored) = try await lead(key, made, timeout, version, core.stampedeLock(lock), beta, makeDefault)
                    outcome = .value(stored)
                    return value
                } catch {
                    outcome = error is CancellationError || Task.isCancelled ? .abandoned : .failed(error)
                    throw error
                }
            case .waiter(let flight):
                switch await flight.wait() {
                case .value(let stored):
                    // A stored nil asked for as a non-optional type decodes to nothing: compute our own.
                    if let v: V = try core.decode(stored, key: made) { return v }
                case .failed(let error): throw error
                case .abandoned: continue
                case .waiterCancelled: throw CancellationError()
                }
            }
        }
    }

    /// The leader's part of ``getOrSet(_:timeout:version:lock:_:)``: re-checks the cache inside the
    /// flight (a flight that just ended may have stored the value); with a stampede lock, takes it or
    /// waits for whoever holds it; computes, adds, re-reads, and releases the lock.
    private func lead<V: CacheValue>(
        _ key: String, _ made: String, _ timeout: CacheTimeout, _ version: Int?, _ lock: StampedeLock?,
        _ beta: Double?, _ makeDefault: () async throws -> V
    ) async throws -> (V, StoredValue) {
        if let hit: (V, StoredValue) = try await readShared(made) { return hit }
        var held: HeldLock?
        if let lock, let lockKey = StampedeLock.key(for: made) {
            // A lock that cannot be taken because the server failed does not stop the computation.
            let token = StampedeLock.token()
            let taken = (try? await core.runAsync(.add, key: lockKey, fallback: true) {
                try await core.backend.asyncSet(lockKey, token, expiry: .after(seconds: lock.timeoutSeconds), mode: .add)
            }) ?? true
            if taken {
                held = HeldLock(key: lockKey, token: token)
            } else {
                let clock = ContinuousClock()
                let deadline = clock.now + lock.wait
                while clock.now < deadline {
                    try await Task.sleep(for: lock.pollInterval)
                    if let hit: (V, StoredValue) = try await readShared(made) { return hit }
                }
            }
        }
        do {
            let result: (V, StoredValue)
            if beta != nil, let metaKey = EarlyRefresh.key(for: made) {
                result = try await compute(made, metaKey, timeout, replacing: false, makeDefault)
            } else {
                let fresh = try await makeDefault()
                try await add(key, fresh, timeout: timeout, version: version)
                result = try await readShared(made) as (V, StoredValue)? ?? (fresh, try core.encode(fresh, key: made))
            }
            if let held { await core.release(held) }
            return result
        } catch {
            if let held { await core.release(held) }
            throw error
        }
    }

    /// Computes the value (timing the producer), stores it (`replacing`: set, else add) with the
    /// early-refresh metadata beside it, and returns it as the caller's type and as stored.
    private func compute<V: CacheValue>(
        _ made: String, _ metaKey: String, _ timeout: CacheTimeout, replacing: Bool, _ makeDefault: () async throws -> V
    ) async throws -> (V, StoredValue) {
        let clock = ContinuousClock()
        let start = clock.now
        let fresh = try await makeDefault()
        let took = clock.now - start
        let encoded = try core.encode(fresh, key: made)
        guard case .expiry(let e) = core.resolve(timeout) else { return (fresh, encoded) }
        let stored = try await core.runAsync(replacing ? .set : .add, key: made, fallback: false) {
            try await core.backend.asyncSet(made, encoded, expiry: e, mode: replacing ? .set : .add)
        }
        if stored, case .after(let seconds) = e {
            let meta = EarlyRefresh(seconds: seconds, deltaMs: Double(took.components.seconds) * 1000 + Double(took.components.attoseconds) / 1e15)
            _ = try? await core.backend.asyncSet(metaKey, meta.stored, expiry: e, mode: .set)
        }
        if !stored, let hit: (V, StoredValue) = try await readShared(made) { return hit }
        return (fresh, encoded)
    }

    /// The value of `made` as this caller's type and as stored, if it is there.
    private func readShared<V: CacheValue>(_ made: String) async throws -> (V, StoredValue)? {
        guard let stored = try await core.asyncGet(made),
              let v: V = try core.decode(stored, key: made) else { return nil }
        return (v, stored)
    }

    /// Returns the values of the keys that exist; see ``Cache/getMany(_:version:)``.
    public func getMany<V: CacheValue>(_ keys: [String], version: Int? = nil) async throws -> [String: V] {
        let ks = try core.keys(keys, version)
        return try await core.runAsync(.getMany, fallback: [:]) { try core.decodeMany(try await core.backend.asyncGetMany(ks.map(\.made)), ks) }
    }

    /// Stores every item; returns the keys that failed; see ``Cache/setMany(_:timeout:version:)``.
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

    /// Adds `delta` atomically; see ``Cache/incr(_:by:version:)``.
    @discardableResult
    public func incr(_ key: String, by delta: Int = 1, version: Int? = nil) async throws -> Int {
        let k = try core.key(key, version)
        return Int(try await core.runAsync(.incr, key: k) { try await core.backend.asyncIncr(k, by: Int64(delta)) })
    }

    /// Subtracts `delta`; see ``Cache/incr(_:by:version:)``.
    @discardableResult
    public func decr(_ key: String, by delta: Int = 1, version: Int? = nil) async throws -> Int {
        try await incr(key, by: try CacheCore.negated(delta, key: key), version: version)
    }

    /// Sets a new timeout on `key`; see ``Cache/touch(_:timeout:version:)``.
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

    /// Moves `key` to `version + delta`; see ``Cache/incrVersion(_:by:version:)``.
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

    /// Moves `key` to `version - delta`; see ``Cache/incrVersion(_:by:version:)``.
    @discardableResult
    public func decrVersion(_ key: String, by delta: Int = 1, version: Int? = nil) async throws -> Int {
        try await incrVersion(key, by: try CacheCore.negated(delta, key: key), version: version)
    }

    /// Removes everything from the backend; see ``Cache/clear()``.
    public func clear() async throws {
        try await core.runAsync(.clear) { try await core.backend.asyncClear() }
    }
}
