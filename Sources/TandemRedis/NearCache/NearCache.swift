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

    private struct Entry {
        let value: StoredValue?
        let expiresAt: UInt64
        let size: Int
    }

    private struct State {
        var table = LRUTable<Entry>()
        var bytes = 0
        /// The mark of the latest read of each key that may still be kept.
        var marks: [String: UInt64] = [:]
        var nextMark: UInt64 = 1
        /// Each server's invalidation connection's client id, while its subscription is up.
        var redirect: [Int64?]
        var statistics = Statistics()
    }

    let settings: NearCacheSettings
    private let state: Mutex<State>

    /// A near cache for a backend that reads from `servers` servers (the primary, then the replicas).
    init(settings: NearCacheSettings, servers: Int) {
        self.settings = settings
        state = Mutex(State(redirect: Array(repeating: nil, count: servers)))
    }

    /// The bytes an entry is counted for: its key, its value and a fixed overhead.
    private static func size(_ key: String, _ value: StoredValue?) -> Int {
        key.utf8.count + (value?.bytes.count ?? 0) + 64
    }

    /// The key's local value, if it is here and has not expired.
    func lookup(_ key: String) -> Lookup {
        let now = monotonicNanos()
        return state.locked { s in
            guard let slot = s.table.slot(of: key) else {
                s.statistics.misses += 1
                return .miss
            }
            if s.table[slot].expiresAt <= now {
                s.bytes -= s.table.remove(slot: slot).size
                s.statistics.misses += 1
                return .miss
            }
            s.table.markUsed(slot)
            s.statistics.hits += 1
            return .hit(s.table[slot].value)
        }
    }

    /// Takes a mark for a read of `key` from server `server`; nil while that server's invalidation
    /// connection is not subscribed (the reply is then not kept).
    func mark(_ key: String, server: Int) -> NearMark? {
        state.locked { s in
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
        if remainingMilliseconds >= 0 { lifetime = min(lifetime, UInt64(remainingMilliseconds) * 1_000_000) }
        guard lifetime > 0 else { return forget(mark) }
        let size = Self.size(mark.key, value)
        state.locked { s in
            guard s.marks[mark.key] == mark.token else { return }
            s.marks[mark.key] = nil
            if let old = s.table.removeValue(forKey: mark.key) { s.bytes -= old.size }
            guard size <= settings.maxBytes else { return }
            while s.table.count >= settings.maxEntries || s.bytes + size > settings.maxBytes, let (_, old) = s.table.removeOldest() {
                s.bytes -= old.size
                s.statistics.evictions += 1
            }
            s.table.set(mark.key, Entry(value: value, expiresAt: now &+ lifetime, size: size))
            s.bytes += size
        }
    }

    /// Gives a mark up without keeping anything (the read failed or its reply is not to be kept).
    func forget(_ mark: NearMark) {
        state.locked { s in
            if s.marks[mark.key] == mark.token { s.marks[mark.key] = nil }
        }
    }

    /// Drops `keys` and their marks: a write by this process.
    func drop(_ keys: [String]) {
        state.locked { s in
            for k in keys {
                s.marks[k] = nil
                if let old = s.table.removeValue(forKey: k) { s.bytes -= old.size }
            }
        }
    }

    /// Drops `keys` and their marks: the server says they changed.
    func invalidate(_ keys: [[UInt8]]) {
        state.locked { s in
            for raw in keys {
                let k = String(decoding: raw, as: UTF8.self)
                s.statistics.invalidations += 1
                s.marks[k] = nil
                if let old = s.table.removeValue(forKey: k) { s.bytes -= old.size }
            }
        }
    }

    /// Drops everything and every mark (a flush, or tracking lost).
    func flush() {
        state.locked { Self.flush(&$0) }
    }

    private static func flush(_ s: inout State) {
        s.table.removeAll()
        s.bytes = 0
        s.marks.removeAll()
        s.statistics.flushes += 1
    }

    /// Server `server`'s invalidation connection is subscribed, as client `id`.
    func trackingStarted(server: Int, id: Int64) {
        state.locked { $0.redirect[server] = id }
    }

    /// Server `server` can no longer tell this process about changes: everything is dropped, and
    /// nothing read from it is kept until ``trackingStarted(server:id:)``.
    func trackingLost(server: Int) {
        state.locked { s in
            s.redirect[server] = nil
            Self.flush(&s)
        }
    }

    /// Server `server`'s invalidation connection's client id while it is subscribed.
    func trackingID(server: Int) -> Int64? {
        state.locked { $0.redirect[server] }
    }

    var statistics: Statistics { state.locked { $0.statistics } }
    /// Entries and the bytes they are counted for.
    var usage: (entries: Int, bytes: Int) { state.locked { ($0.table.count, $0.bytes) } }
}
