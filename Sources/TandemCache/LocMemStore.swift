import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The storage behind LocMem caches. Caches with the same LOCATION share one store, as in Django.
final class LocMemStore: Sendable {
    struct Entry {
        var value: StoredValue
        /// Clock reading after which the entry is gone; `.infinity` for never.
        var expiresAt: Double
    }

    struct State {
        /// The entries, least recently used first.
        var entries = LRUTable<Entry>()
    }

    let state = Mutex<State>(State())

    private static let shared = Mutex<[String: LocMemStore]>([:])

    /// The store for `location`, created on first use and kept for the life of the process.
    static func named(_ location: String) -> LocMemStore {
        shared.locked { stores in
            if let s = stores[location] { return s }
            let s = LocMemStore()
            stores[location] = s
            return s
        }
    }
}
