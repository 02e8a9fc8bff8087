import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The embedded in-process cache, Django's LocMemCache: thread-safe, least-recently-used culling at
/// `MAX_ENTRIES` (300) by removing 1/`CULL_FREQUENCY` (3) of the entries (0 clears everything), and
/// atomic `incr` that keeps the expiry. Caches with the same LOCATION share storage; different
/// LOCATIONs are isolated. Its operations never wait, so its async face calls straight through.
@_spi(Backend) public final class LocMemBackend: NonBlockingCacheBackend {
    /// The shared-storage name.
    public let location: String
    /// Culling starts when a set finds this many entries.
    public let maxEntries: Int
    /// A cull removes `count / cullFrequency` entries; 0 removes all.
    public let cullFrequency: Int
    private let store: LocMemStore
    private let clock: LocMemClock

    /// Creates a LocMem backend on the store named `location` (Django's `LOCATION`): backends made
    /// with the same name share their entries. `maxEntries` and `cullFrequency` are Django's
    /// `MAX_ENTRIES` and `CULL_FREQUENCY`.
    public convenience init(location: String = "", maxEntries: Int = 300, cullFrequency: Int = 3) {
        self.init(location: location, maxEntries: maxEntries, cullFrequency: cullFrequency, clock: .system)
    }

    /// A LocMem backend that reads expiry times from `clock` (tests move a manual clock).
    package init(location: String, maxEntries: Int, cullFrequency: Int, clock: LocMemClock) {
        self.location = location
        self.maxEntries = max(1, maxEntries)
        self.cullFrequency = max(0, cullFrequency)
        self.store = LocMemStore.named(location)
        self.clock = clock
    }

    /// LocMem accepts any key and warns about ones memcached would refuse.
    public var keyStrictness: KeyStrictness { .lenient }
    /// `locmem://location`.
    public var backendDescription: String { "locmem://\(location)" }

    /// The number of entries in the store, live or expired but not yet removed.
    public var count: Int { store.state.locked { $0.entries.count } }

    private func deadline(_ expiry: CacheExpiry, now: Double) -> Double {
        switch expiry {
        case .never: return .infinity
        case .after(let s): return now + s
        }
    }

    /// The live value, marked most recently used; an expired entry is dropped and misses.
    public func get(_ key: String) throws -> StoredValue? {
        let now = clock.now()
        return store.state.locked { s in
            guard let i = s.entries.slot(of: key) else { return nil }
            if s.entries[i].expiresAt <= now {
                s.entries.remove(slot: i)
                return nil
            }
            s.entries.markUsed(i)
            return s.entries[i].value
        }
    }

    /// The live values of the keys that have one.
    public func getMany(_ keys: [String]) throws -> [String: StoredValue] {
        var out: [String: StoredValue] = [:]
        for k in keys { if let v = try get(k) { out[k] = v } }
        return out
    }

    /// Stores (or, for `.add`, stores only if no live value), culling first when the store is full.
    public func set(_ key: String, _ value: StoredValue, expiry: CacheExpiry, mode: SetMode) throws -> Bool {
        let now = clock.now()
        let expiresAt = deadline(expiry, now: now)
        return store.state.locked { s in
            store(&s, key, value, expiresAt: expiresAt, mode: mode, now: now)
        }
    }

    private func store(_ s: inout LocMemStore.State, _ key: String, _ value: StoredValue, expiresAt: Double, mode: SetMode, now: Double) -> Bool {
        if mode == .add, let i = s.entries.slot(of: key), s.entries[i].expiresAt > now { return false }
        // As Django: a full store culls before any set, also one that replaces a key.
        if s.entries.count >= maxEntries { cull(&s) }
        s.entries.set(key, LocMemStore.Entry(value: value, expiresAt: expiresAt))
        return true
    }

    /// Removes the least recently used third (by default) of the entries, or all with CULL_FREQUENCY 0:
    /// the oldest go first, in O(removed), as Django pops them from its ordered dict.
    private func cull(_ s: inout LocMemStore.State) {
        if cullFrequency == 0 {
            s.entries.removeAll()
            return
        }
        s.entries.removeOldest(s.entries.count / cullFrequency)
    }

    /// Stores every item; LocMem never fails a key, so the result is empty.
    public func setMany(_ items: [(key: String, value: StoredValue)], expiry: CacheExpiry) throws -> [String] {
        let now = clock.now()
        let expiresAt = deadline(expiry, now: now)
        store.state.locked { s in
            for (k, v) in items { _ = store(&s, k, v, expiresAt: expiresAt, mode: .set, now: now) }
        }
        return []
    }

    /// Removes the entry; whether a live one existed.
    public func delete(_ key: String) throws -> Bool {
        let now = clock.now()
        return store.state.locked { s in
            guard let e = s.entries.removeValue(forKey: key) else { return false }
            return e.expiresAt > now
        }
    }

    /// Compares and deletes under the store's lock.
    public func deleteIfEqual(_ key: String, _ expected: StoredValue) throws -> Bool {
        let now = clock.now()
        return store.state.locked { s in
            guard let i = s.entries.slot(of: key), s.entries[i].expiresAt > now, s.entries[i].value.bytes == expected.bytes else {
                return false
            }
            s.entries.remove(slot: i)
            return true
        }
    }

    /// Removes every key.
    public func deleteMany(_ keys: [String]) throws {
        store.state.locked { s in
            for k in keys { s.entries.removeValue(forKey: k) }
        }
    }

    /// Adds `delta` under the store's lock, keeping the expiry; missing key or non-integer value throw.
    public func incr(_ key: String, by delta: Int64) throws -> Int64 {
        let now = clock.now()
        return try store.state.locked { s throws(CacheError) -> Int64 in
            guard let i = s.entries.slot(of: key), s.entries[i].expiresAt > now else {
                throw CacheError.missingKey(key)
            }
            guard let current = parseStoredInteger(s.entries[i].value.bytes),
                  case (let next, false) = current.addingReportingOverflow(delta)
            else { throw CacheError.notAnInteger(key: key) }
            s.entries[i].value = StoredValue(bytes: storedIntegerBytes(next), kind: .integer)
            s.entries.markUsed(i)
            return next
        }
    }

    /// Gives a live entry a new expiry; whether it existed.
    public func touch(_ key: String, expiry: CacheExpiry) throws -> Bool {
        let now = clock.now()
        let expiresAt = deadline(expiry, now: now)
        return store.state.locked { s in
            guard let i = s.entries.slot(of: key), s.entries[i].expiresAt > now else { return false }
            s.entries[i].expiresAt = expiresAt
            return true
        }
    }

    /// Whether a live entry exists.
    public func hasKey(_ key: String) throws -> Bool {
        let now = clock.now()
        return store.state.locked { s in
            guard let i = s.entries.slot(of: key) else { return false }
            return s.entries[i].expiresAt > now
        }
    }

    /// Empties the store (every cache sharing this LOCATION sees it empty).
    public func clear() throws {
        store.state.locked { $0.entries.removeAll() }
    }

    /// Nothing to release.
    public func close() {}
}
