/// A dictionary that keeps its entries in least-recently-used order: lookup, insert, remove and
/// "mark used" in O(1), and the oldest `k` entries removed in O(k), as Django's LocMemCache does with
/// its `OrderedDict` (`move_to_end` on every read, `popitem(last=False)` to cull). Not thread-safe:
/// its owner holds it under a lock.
struct LRUTable<Value> {
    private struct Node {
        var key: String
        var value: Value?
        var older: Int
        var newer: Int
    }

    private var slots: [String: Int] = [:]
    private var nodes: [Node] = []
    private var free: [Int] = []
    /// The least and the most recently used node (-1 when empty).
    private var oldest = -1
    private var newest = -1

    init() {}

    var count: Int { slots.count }

    /// The slot of `key`, if present (a slot is valid until its entry is removed).
    func slot(of key: String) -> Int? { slots[key] }

    /// The value in a valid slot (read and changed in place, without copying it).
    subscript(slot: Int) -> Value {
        _read { yield nodes[slot].value! }
        _modify { yield &nodes[slot].value! }
    }

    /// Makes the entry in `slot` the most recently used.
    mutating func markUsed(_ slot: Int) {
        guard slot != newest else { return }
        unlink(slot)
        linkNewest(slot)
    }

    /// Stores `value` under `key` as the most recently used entry.
    mutating func set(_ key: String, _ value: Value) {
        if let s = slots[key] {
            nodes[s].value = value
            markUsed(s)
            return
        }
        let s: Int
        if let f = free.popLast() {
            s = f
            nodes[s] = Node(key: key, value: value, older: -1, newer: -1)
        } else {
            s = nodes.count
            nodes.append(Node(key: key, value: value, older: -1, newer: -1))
        }
        slots[key] = s
        linkNewest(s)
    }

    /// Removes the entry in a valid slot and returns its value.
    @discardableResult
    mutating func remove(slot s: Int) -> Value {
        unlink(s)
        let value = nodes[s].value!
        slots.removeValue(forKey: nodes[s].key)
        nodes[s].key = ""
        nodes[s].value = nil
        free.append(s)
        return value
    }

    /// Removes `key`'s entry, if any, and returns its value.
    @discardableResult
    mutating func removeValue(forKey key: String) -> Value? {
        guard let s = slots[key] else { return nil }
        return remove(slot: s)
    }

    /// Removes the least recently used entry and returns its key and value (nil when empty).
    mutating func removeOldest() -> (key: String, value: Value)? {
        guard oldest >= 0 else { return nil }
        let key = nodes[oldest].key
        return (key, remove(slot: oldest))
    }

    /// Removes the `k` least recently used entries.
    mutating func removeOldest(_ k: Int) {
        var left = k
        while left > 0, oldest >= 0 {
            remove(slot: oldest)
            left -= 1
        }
    }

    mutating func removeAll() {
        self = LRUTable()
    }

    /// The keys from the least to the most recently used (for tests).
    var keysByAge: [String] {
        var out: [String] = []
        var s = oldest
        while s >= 0 {
            out.append(nodes[s].key)
            s = nodes[s].newer
        }
        return out
    }

    private mutating func unlink(_ s: Int) {
        let (o, n) = (nodes[s].older, nodes[s].newer)
        if o >= 0 { nodes[o].newer = n } else { oldest = n }
        if n >= 0 { nodes[n].older = o } else { newest = o }
        nodes[s].older = -1
        nodes[s].newer = -1
    }

    private mutating func linkNewest(_ s: Int) {
        nodes[s].older = newest
        nodes[s].newer = -1
        if newest >= 0 { nodes[newest].newer = s } else { oldest = s }
        newest = s
    }
}
