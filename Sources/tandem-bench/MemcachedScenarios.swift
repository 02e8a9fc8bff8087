import Foundation
import Synchronization
import Tandem

struct MemcachedScenarios {
    let server: String
    let seconds: Double
    let rounds: Int
    let referenceBinary: String?

    func cache() throws -> Cache {
        try Caches(settings: ["default": CacheSettings(backend: "memcached", location: [server])]).default
    }

    /// 64 tasks doing async gets (1 KiB values over 1024 keys), against `memcaslap -T 2 -c 64` (its
    /// default get-mostly mix, 1 KiB values) on the same server.
    func asyncGet(tasks: Int = 64) async throws -> BenchResult {
        let cache = try cache()
        let value = [UInt8](repeating: 42, count: 1024)
        let keys = (0..<1024).map { "bench-\($0)" }
        try await cache.async.setMany(Dictionary(uniqueKeysWithValues: keys.map { ($0, value) }), timeout: .never)
        var ref: [Double] = []
        var tan: [Double] = []
        for _ in 0..<rounds {
            let out = try runTool("/usr/bin/memcaslap", ["-s", server, "-T", "2", "-c", String(tasks), "-t", "\(max(1, Int(seconds)))s"])
            // "Run time: 3.0s Ops: 271519 TPS: 90499 Net_rate: 101.2M/s"
            guard let line = out.split(separator: "\n").last(where: { $0.contains("TPS:") }),
                  let tps = line.split(separator: " ").drop(while: { $0 != "TPS:" }).dropFirst().first.flatMap({ Double($0) })
            else { throw BenchError("cannot parse memcaslap output: \(out.suffix(300))") }
            ref.append(tps)
            let counter = Counter()
            tan.append(try await asyncThroughput(tasks: tasks, seconds: seconds) {
                let v: [UInt8]? = try await cache.async.get(keys[counter.next() & 1023])
                if v?.count != 1024 { throw BenchError("wrong value") }
            })
        }
        if let b = cache.backend as? MemcachedBackend {
            let st = b.asyncGetStatistics
            FileHandle.standardError.write(Data("memcached-async-get: \(st.gets) gets in \(st.roundTrips) round trips (largest batch \(st.largestBatch))\n".utf8))
        }
        let r = ref.max() ?? 0
        let t = tan.max() ?? 0
        return BenchResult(scenario: "memcached-async-get", reference: r, tandem: t, unit: "ops/s", ratio: t / r, better: "higher")
    }

    /// One thread of blocking gets, against a C loop over raw libmemcached: seconds per get.
    func syncGet() throws -> BenchResult {
        guard let referenceBinary else { throw BenchError("memcached-sync-get needs --memcached-reference") }
        let cache = try cache()
        try Bridge.blocking { try await cache.async.set("bench", "xxx", timeout: .never) }
        let iterations = max(20_000, Int(seconds * 15_000))
        return try compare("memcached-sync-get", rounds: max(rounds, 5), unit: "s", better: "lower", reference: {
            guard let v = Double(try runTool(referenceBinary, [server, ":1:bench", String(seconds)])
                .trimmingCharacters(in: .whitespacesAndNewlines)) else { throw BenchError("bad reference output") }
            return v
        }, tandem: {
            secondsPerOp(iterations: iterations) {
                let v: [UInt8]? = try? cache.get("bench")
                precondition(v?.count == 3, "memcached-sync-get: wrong value")
            }
        })
    }
}

/// A shared counter for spreading keys.
final class Counter: Sendable {
    private let value = Atomic<Int>(0)
    func next() -> Int { value.add(1, ordering: .relaxed).oldValue }
}
