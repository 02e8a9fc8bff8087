/// Stored values (or a remembered absence) that expire, in least-recently-used order, with the bytes
/// they are counted for: the table behind Redis's near cache. Concrete (not generic) so that callers
/// in other modules run code specialised for it. Not thread-safe: its owner holds it under a lock.
package struct ExpiringValues {
    /// One value: nil when the server had none.
    package struct Entry {
        package let value: StoredValue?
        /// Monotonic nanoseconds.
        package let expiresAt: UInt64
        package let size: Int
    }

    private var table = LRUTable<Entry>()
    /// The bytes of every entry.
    package private(set) var bytes = 0

    package init() {}

    package var count: Int { table.count }

    /// What the table holds for `key` at `now`: nil when nothing (an expired entry is removed),
    /// `.some(nil)` for a remembered absence. A hit becomes the most recently used entry.
    package mutating func lookup(_ key: String, now: UInt64) -> StoredValue?? {
        guard let slot = table.slot(of: key) else { return nil }
        if table[slot].expiresAt <= now {
            bytes -= table.remove(slot: slot).size
            return nil
        }
        table.markUsed(slot)
        return .some(table[slot].value)
    }

    /// Stores `value` as the most recently used entry, first removing the least recently used ones
    /// while there would be more than `maxEntries` entries or `maxBytes` bytes; returns how many it
    /// removed. A value larger than `maxBytes` is not stored (and `key`'s old entry is gone).
    package mutating func store(_ key: String, _ value: StoredValue?, expiresAt: UInt64, size: Int, maxEntries: Int, maxBytes: Int) -> Int {
        remove(key)
        guard size <= maxBytes else { return 0 }
        var evicted = 0
        while table.count >= maxEntries || bytes + size > maxBytes, let (_, old) = table.removeOldest() {
            bytes -= old.size
            evicted += 1
        }
        table.set(key, Entry(value: value, expiresAt: expiresAt, size: size))
        bytes += size
        return evicted
    }

    /// Removes `key`'s entry, if any.
    package mutating func remove(_ key: String) {
        if let old = table.removeValue(forKey: key) { bytes -= old.size }
    }

    package mutating func removeAll() {
        table.removeAll()
        bytes = 0
    }
}
