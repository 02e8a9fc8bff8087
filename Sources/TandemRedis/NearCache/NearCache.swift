import Synchronization
@_spi(Backend) import TandemCache
import TandemLoop

/// Values read from Redis, kept in process memory and dropped when the server says they changed.
///
/// One near cache serves both faces of a backend. A read that may be kept takes a ``NearMark``
/// before it is sent; an invalidation of the key (or a flush) drops the mark, and the reply is kept
/// only if its mark survived, so a reply that crossed a change of its key is never kept. A local
/// write drops the key and its marks before it is sent and again once it is answered, so this
/// process reads its own writes. When the server can no longer tell this process about changes (an
/// invalidation connection or, in tracking mode, a reading connection lost), everything is dropped,
/// and nothing is kept for a server until its invalidation connection is back.
final class NearCache: Sendable {
    /// What a lookup found.
    enum Lookup {
        /// The key's value (nil: the server had no value for it).
        case hit(StoredValue?)
        case miss
    }

    /// Counters since the cache was made.
    struct Statistics: Sendable, Equatable {
        var hits = 0
        var misses = 0
        /// Keys the server said changed (each key once per message).
        var invalidations = 0
        /// Entries removed to stay within `MAX_ENTRIES` and `MAX_BYTES`.
        var evictions = 0
        /// Times everything was dropped: a flush on the server, or tracking lost.
        var flushes = 0
    }

    private struct State {
        var table = ExpiringValues()
        /// The mark of the latest read of each key that may still be kept.
        var marks: [String: UInt64] = [:]
        var nextMark: UInt64 = 1
        /// Each server's invalidation connection's client id, while its subscription is up (a copy in
        /// every shard, changed in all of them, so that a mark and a loss of tracking are ordered by
        /// the shard's lock).
        var redirect: [Int64?]
        var statistics = Statistics()
    }

    /// A part of the cache with a lock of its own: keys are spread over the shards by their hash, so
    /// that threads reading different keys seldom wait for each other.
    private final class Shard: Sendable {
        let state: Mutex<State>
        let maxEntries: Int
        let maxBytes: Int
        init(servers: Int, maxEntries: Int, maxBytes: Int) {
            state = Mutex(State(redirect: Array(repeating: nil, count: servers)))
            self.maxEntries = maxEntries
            self.maxBytes = maxBytes
        }
    }

    let settings: NearCacheSettings
    private let shards: [Shard]
    private let shardMask: Int

    /// A near cache for a backend that reads from `servers` servers (the primary, then the replicas).
    /// Up to 16 shards, each with a fair part of the entries and bytes (at least 64 entries and 1 MiB
    /// each; small caches have one shard and an exact least-recently-used order).
    init(settings: NearCacheSettings, servers: Int) {
        self.settings = settings
        var count = 1
        while count < 16 && settings.maxEntries / (count * 2) >= 64 && settings.maxBytes / (count * 2) >= 1 << 20 { count *= 2 }
        shards = (0..<count).map { _ in
            Shard(servers: servers, maxEntries: max(1, settings.maxEntries / count), maxBytes: settings.maxBytes / count)
        }
        shardMask = count - 1
    }

    @inline(__always)
    private func shard(_ key: String) -> Shard {
        shards.count == 1 ? shards[0] : shards[key.hashValue & shardMask]
    }

    /// The bytes an entry is counted for: its key, its value and a fixed overhead.
    private static func size(_ key: String, _ value: StoredValue?) -> Int {
        key.utf8.count + (value?.bytes.count ?? 0) + 64
    }

    /// The key's local value, if it is here and has not expired.
    func lookup(_ key: String) -> Lookup {
        let now = monotonicNanos()
        return shard(key).state.locked { s in
            guard let found = s.table.lookup(key, now: now) else {
                s.statistics.misses += 1
                return .miss
            }
            s.statistics.hits += 1
            return .hit(found)
        }
    }

    /// Takes a mark for a read of `key` from server `server`; nil while that server's invalidation
    /// connection is not subscribed (the reply is then not kept).
    func mark(_ key: String, server: Int) -> NearMark? {
        shard(key).state.locked { s in
            guard let redirect = s.redirect[server] else { return nil }
            let token = s.nextMark
            s.nextMark += 1
            s.marks[key] = token
            return NearMark(key: key, token: token, redirect: redirect)
        }
    }

    /// Keeps a read's reply if its mark survived. `remainingMilliseconds` is the key's `PTTL` read in
    /// the same round trip: -1 for no expiry, -2 for no key (a value with -2 was deleted in between,
    /// and is not kept).
    func store(_ mark: NearMark, value: StoredValue?, remainingMilliseconds: Int64) {
        if value != nil && remainingMilliseconds == -2 { return forget(mark) }
        let now = monotonicNanos()
        var lifetime = settings.ttlNanos
        // Compared in milliseconds: the server's PTTL may be far beyond what nanoseconds can hold.
        if remainingMilliseconds >= 0, UInt64(remainingMilliseconds) < lifetime / 1_000_000 {
            lifetime = UInt64(remainingMilliseconds) * 1_000_000
        }
        guard lifetime > 0 else { return forget(mark) }
        let size = Self.size(mark.key, value)
        let shard = shard(mark.key)
        shard.state.locked { s in
            guard s.marks[mark.key] == mark.token else { return }
            s.marks[mark.key] = nil
            s.statistics.evictions += s.table.store(mark.key, value, expiresAt: now &+ lifetime, size: size,
                                                    maxEntries: shard.maxEntries, maxBytes: shard.maxBytes)
        }
    }

    /// Gives a mark up without keeping anything (the read failed or its reply is not to be kept).
    func forget(_ mark: NearMark) {
        shard(mark.key).state.locked { s in
            if s.marks[mark.key] == mark.token { s.marks[mark.key] = nil }
        }
    }

    /// Drops `keys` and their marks: a write by this process.
    func drop(_ keys: [String]) {
        for k in keys {
            shard(k).state.locked { s in
                s.marks[k] = nil
                s.table.remove(k)
            }
        }
    }

    /// Drops `keys` and their marks: the server says they changed.
    func invalidate(_ keys: [[UInt8]]) {
        for raw in keys {
            let k = String(decoding: raw, as: UTF8.self)
            shard(k).state.locked { s in
                s.statistics.invalidations += 1
                s.marks[k] = nil
                s.table.remove(k)
            }
        }
    }

    /// Drops everything and every mark (a flush, or tracking lost).
    func flush() {
        for (i, shard) in shards.enumerated() {
            shard.state.locked { s in Self.clear(&s, counted: i == 0) }
        }
    }

    private static func clear(_ s: inout State, counted: Bool) {
        s.table.removeAll()
        s.marks.removeAll()
        if counted { s.statistics.flushes += 1 }
    }

    /// Server `server`'s invalidation connection is subscribed, as client `id`.
    func trackingStarted(server: Int, id: Int64) {
        for shard in shards { shard.state.locked { $0.redirect[server] = id } }
    }

    /// Server `server` can no longer tell this process about changes: everything is dropped, and
    /// nothing read from it is kept until ``trackingStarted(server:id:)``.
    func trackingLost(server: Int) {
        for (i, shard) in shards.enumerated() {
            shard.state.locked { s in
                s.redirect[server] = nil
                Self.clear(&s, counted: i == 0)
            }
        }
    }

    /// Server `server`'s invalidation connection's client id while it is subscribed.
    func trackingID(server: Int) -> Int64? {
        shards[0].state.locked { $0.redirect[server] }
    }

    var statistics: Statistics {
        shards.reduce(into: Statistics()) { total, shard in
            let s = shard.state.locked { $0.statistics }
            total.hits += s.hits
            total.misses += s.misses
            total.invalidations += s.invalidations
            total.evictions += s.evictions
            total.flushes += s.flushes
        }
    }

    /// Entries and the bytes they are counted for.
    var usage: (entries: Int, bytes: Int) {
        shards.reduce(into: (0, 0)) { total, shard in
            let u = shard.state.locked { ($0.table.count, $0.table.bytes) }
            total.0 += u.0
            total.1 += u.1
        }
    }
}
