@testable import TandemCache
import Testing

/// The least-recently-used table behind LocMem.
struct LRUTableTests {
    @Test func readsAndWritesMoveAKeyToTheNewEndAndCullsTakeTheOldest() {
        var t = LRUTable<Int>()
        for i in 0..<6 { t.set("k\(i)", i) }
        #expect(t.keysByAge == ["k0", "k1", "k2", "k3", "k4", "k5"])
        t.markUsed(t.slot(of: "k1")!)
        t.set("k3", 33)
        #expect(t.keysByAge == ["k0", "k2", "k4", "k5", "k1", "k3"])
        #expect(t[t.slot(of: "k3")!] == 33)
        t.removeOldest(2)
        #expect(t.keysByAge == ["k4", "k5", "k1", "k3"] && t.count == 4 && t.slot(of: "k0") == nil)
        #expect(t.removeValue(forKey: "k1") == 1)
        #expect(t.removeValue(forKey: "k1") == nil)
        // Freed slots are reused; the order stays right.
        t.set("a", 10)
        t.set("b", 11)
        #expect(t.keysByAge == ["k4", "k5", "k3", "a", "b"])
        t.removeOldest(100)
        #expect(t.count == 0 && t.keysByAge.isEmpty)
        t.set("z", 1)
        #expect(t.keysByAge == ["z"])
    }

    @Test func matchesAReferenceModelOverRandomOperations() {
        var t = LRUTable<Int>()
        var model: [(String, Int)] = []  // oldest first
        var rng = SystemRandomNumberGenerator()
        for step in 0..<20_000 {
            let key = "k\(Int.random(in: 0..<50, using: &rng))"
            switch Int.random(in: 0..<4, using: &rng) {
            case 0:
                t.set(key, step)
                model.removeAll { $0.0 == key }
                model.append((key, step))
            case 1:
                if let s = t.slot(of: key) {
                    t.markUsed(s)
                    let i = model.firstIndex { $0.0 == key }!
                    model.append(model.remove(at: i))
                } else {
                    #expect(!model.contains { $0.0 == key })
                }
            case 2:
                #expect(t.removeValue(forKey: key) == model.first { $0.0 == key }?.1)
                model.removeAll { $0.0 == key }
            default:
                let k = Int.random(in: 0..<3, using: &rng)
                t.removeOldest(k)
                model.removeFirst(min(k, model.count))
            }
            if step % 97 == 0 { #expect(t.keysByAge == model.map(\.0), "step \(step)") }
        }
        #expect(t.keysByAge == model.map(\.0))
    }
}
