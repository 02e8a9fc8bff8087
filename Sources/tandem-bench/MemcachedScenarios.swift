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

    /// 64 tasks doing async gets of 1 KiB values spread over 65,536 keys, against `memaslap -T 2 -c 64
    /// -w 1k` configured for gets only (64 connections x a window of 1,024 keys = 65,536 keys of 1 KiB;
    /// it first sets its window, so 65,536 of its operations are sets of the same size, counted as it
    /// counts them) on the same server, in the same run. Also reports the client CPU per operation on
    /// both sides (user + system time of all threads over the rounds), Tandem's thread count, and the
    /// reference's misses (0 expected: the benchmark server has room for every key), and Tandem's p50
    /// and p99 latency per get (one get in 16 timed; memaslap prints no percentiles).
    func asyncGet(tasks: Int = 64) async throws -> BenchResult {
        let cache = try cache()
        let value = [UInt8](repeating: 42, count: 1024)
        let keyCount = 65_536
        let keys = (0..<keyCount).map { "bench-\($0)" }
        for start in stride(from: 0, to: keyCount, by: 4096) {
            try await cache.async.setMany(Dictionary(uniqueKeysWithValues: keys[start..<(start + 4096)].map { ($0, value) }), timeout: .never)
        }
        let config = FileManager.default.temporaryDirectory.appendingPathComponent("tandem-memaslap-\(getpid()).cfg")
        try "key\n16 16 1\nvalue\n1024 1024 1\ncmd\n0 0\n1 1\n".write(to: config, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: config) }
        var ref: [Double] = []
        var tan: [Double] = []
        var refCPU: [Double] = []
        var tanCPU: [Double] = []
        var tanTally = CPUTally()
        var threads = 0
        var misses = 0
        var latencies: [Double] = []
        for _ in 0..<rounds {
            let childBefore = CPUTime.children()
            let out = try runTool("/usr/bin/memcaslap", ["-s", server, "-F", config.path, "-T", "2", "-c", String(tasks), "-w", "1k", "-t", "\(max(1, Int(seconds)))s"])
            // "get_misses: 0" ... "Run time: 3.0s Ops: 271519 TPS: 90499 Net_rate: 101.2M/s"
            func field(_ name: String, in line: Substring) -> Double? {
                line.split(separator: " ").drop(while: { $0 != name }).dropFirst().first.flatMap { Double($0) }
            }
            let lines = out.split(separator: "\n")
            guard let line = lines.last(where: { $0.contains("TPS:") }), let tps = field("TPS:", in: line), let ops = field("Ops:", in: line), ops > 0
            else { throw BenchError("cannot parse memaslap output: \(out.suffix(300))") }
            misses += lines.last(where: { $0.hasPrefix("get_misses:") }).flatMap { Int($0.split(separator: " ").last ?? "") } ?? -1
            ref.append(tps)
            refCPU.append((CPUTime.children() - childBefore) / ops * 1e6)
            let counter = Counter()
            let before = CPUTime.process()
            let threadCount = Counter()
            let samples = LatencySamples()
            let parksBefore = loopThreadParks()
            tan.append(try await asyncThroughput(tasks: tasks, seconds: seconds) {
                let i = counter.next()
                if i == 10_000 { threadCount.set(processThreadCount()) }
                let start = i & 15 == 0 ? ContinuousClock.now : nil
                let v: [UInt8]? = try await cache.async.get(keys[i & (keyCount - 1)])
                if let start { samples.add(ContinuousClock.now - start) }
                if v?.count != 1024 { throw BenchError("wrong value") }
            })
            latencies += samples.microseconds
            tanCPU.append(tanTally.add(seconds: CPUTime.process() - before, operations: counter.next()))
            threads = max(threads, threadCount.next())
            FileHandle.standardError.write(Data(String(format: "memcached-async-get round: memaslap %.0f ops/s %.2f us CPU/op; tandem %.0f gets/s %.2f us CPU/get, loop thread parked %d times\n",
                                                       tps, refCPU.last ?? 0, tan.last ?? 0, tanCPU.last ?? 0, loopThreadParks() - parksBefore).utf8))
        }
        let r = ref.max() ?? 0
        let t = tan.max() ?? 0
        var result = BenchResult(scenario: "memcached-async-get", reference: r, tandem: t, unit: "ops/s", ratio: t / r, better: "higher")
        // All the Tandem rounds' CPU time divided by all their gets, as for redis-async-get.
        result.cpuUsPerOp = tanTally.microsecondsPerOperation
        result.referenceCpuUsPerOp = median(refCPU)
        result.threads = threads
        result.referenceMisses = misses
        result.p50Us = percentile(latencies, 0.50)
        result.p99Us = percentile(latencies, 0.99)
        return result
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
    func set(_ v: Int) { value.store(v, ordering: .relaxed) }
}

/// How many times the event-loop threads of this process ("tandem-*" threads) went to sleep so far:
/// the sum of their voluntary context switches (`/proc/self/task/*/status`). A loop that parks and is
/// woken for every batch pays the wake-up's latency each time; one kept busy by the load does not.
func loopThreadParks() -> Int {
    var total = 0
    for task in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? [] {
        guard let name = try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8), name.hasPrefix("tandem-"),
              let status = try? String(contentsOfFile: "/proc/self/task/\(task)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("voluntary_ctxt_switches:") }),
              let count = line.split(separator: "\t").last.flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) })
        else { continue }
        total += count
    }
    return total
}

/// The number of threads of this process now (`/proc/self/task`).
func processThreadCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? -1
}

/// The median of `values` (0 for none).
func median(_ values: [Double]) -> Double {
    let v = values.sorted()
    guard !v.isEmpty else { return 0 }
    return v.count % 2 == 1 ? v[v.count / 2] : (v[v.count / 2 - 1] + v[v.count / 2]) / 2
}
