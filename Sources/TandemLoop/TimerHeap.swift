/// A binary min-heap of timers ordered by deadline, then by creation order (so timers with equal
/// deadlines fire in the order they were scheduled). Cancelled timers are removed lazily.
struct TimerHeap {
    struct Entry {
        var deadline: UInt64
        var id: UInt64
    }

    private var items: [Entry] = []

    var isEmpty: Bool { items.isEmpty }
    var count: Int { items.count }
    var first: Entry? { items.first }

    private static func less(_ a: Entry, _ b: Entry) -> Bool {
        a.deadline < b.deadline || (a.deadline == b.deadline && a.id < b.id)
    }

    mutating func push(_ e: Entry) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard TimerHeap.less(items[i], items[parent]) else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> Entry? {
        guard !items.isEmpty else { return nil }
        let top = items[0]
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1
                let r = l + 1
                var m = i
                if l < items.count && TimerHeap.less(items[l], items[m]) { m = l }
                if r < items.count && TimerHeap.less(items[r], items[m]) { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }

    mutating func removeAll() { items.removeAll() }

    /// Rebuilds the heap keeping only the entries `isLive` accepts (cancelled timers are otherwise
    /// removed only when they reach the top, and a timer rescheduled many times a second, such as
    /// curl's, would pile them up).
    mutating func compact(keeping isLive: (UInt64) -> Bool) {
        let live = items.filter { isLive($0.id) }
        items.removeAll(keepingCapacity: true)
        for e in live { push(e) }
    }
}
