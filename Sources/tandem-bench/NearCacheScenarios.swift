import Foundation
import Synchronization
import Tandem

/// The Redis near cache (`NEAR_CACHE`): what a hot key costs with it, against the same reads over the
/// network in the same run, and how soon a change by another client reaches its readers.
struct NearCacheScenarios {
    let url: String
    let seconds: Double
    let rounds: Int

    private func cache(near: Bool) throws -> Cache {
        var options: [String: SettingValue] = [:]
        if near { options["NEAR_CACHE"] = .dict(["MAX_ENTRIES": 10_000]) }
        return try Caches(settings: ["default": CacheSettings(backend: "redis", location: [url], options: options)]).default
    }

    /// Reads every key until repeated reads are served from process memory.
    private func warm(_ cache: Cache, _ keys: [String]) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            let found: [String: [UInt8]] = try await cache.async.getMany(keys)
            guard found.count == keys.count else { throw BenchError("near-cache-get: the hot keys are missing") }
            try await Task.sleep(for: .milliseconds(20))
            // Held once every key answers without a round trip: a thousand reads in well under a millisecond.
            let start = ContinuousClock.now
            for k in keys { let _: [UInt8]? = try await cache.async.get(k) }
            if ContinuousClock.now - start < .milliseconds(1) { return }
        }
        throw BenchError("near-cache-get: the near cache did not hold the hot keys within 10 s")
    }

    /// `near-cache-get`: 64 tasks reading 1,000 hot keys through the async face with the near cache,
    /// against the same tasks and keys without it (each read a round trip: redis-async-get's work);
    /// CPU per read on the near side. `near-cache-get-blocking`: one thread of blocking reads of the
    /// same keys, with the near cache and without, seconds per read.
    func get(tasks: Int = 64) async throws -> [BenchResult] {
        let plain = try cache(near: false)
        let near = try cache(near: true)
        let keys = (0..<1000).map { "hot-\($0)" }
        for k in keys { try await plain.async.set(k, "xxx", timeout: .never) }
        try await warm(near, keys)
        var ref: [Double] = [], tan: [Double] = [], refCPU: [Double] = []
        var tally = CPUTally()
        for _ in 0..<rounds {
            let next = Counter()
            let (r, rc) = try await tandemGets(plain, tasks: tasks, seconds: seconds) { keys[next.next() % keys.count] }
            ref.append(r)
            refCPU.append(rc)
            let counter = Counter()
            let before = CPUTime.process()
            tan.append(try await asyncThroughput(tasks: tasks, seconds: seconds) {
                let v: [UInt8]? = try await near.async.get(keys[counter.next() % keys.count])
                if v?.count != 3 { throw BenchError("wrong value") }
            })
            _ = tally.add(seconds: CPUTime.process() - before, operations: counter.next())
        }
        let r = ref.max() ?? 0
        let t = tan.max() ?? 0
        var async = BenchResult(scenario: "near-cache-get", reference: r, tandem: t, unit: "ops/s", ratio: r == 0 ? 0 : t / r, better: "higher")
        async.cpuUsPerOp = tally.microsecondsPerOperation
        async.referenceCpuUsPerOp = median(refCPU)
        let iterations = max(20_000, Int(seconds * 15_000))
        let index = Counter()
        let blocking = try await Bridge.offload { [rounds] in
            compare("near-cache-get-blocking", rounds: rounds, unit: "s", better: "lower", reference: {
                secondsPerOp(iterations: iterations) {
                    let v: [UInt8]? = try? plain.get(keys[index.next() % 1000])
                    precondition(v?.count == 3, "near-cache-get-blocking: wrong value")
                }
            }, tandem: {
                secondsPerOp(iterations: iterations * 20) {
                    let v: [UInt8]? = try? near.get(keys[index.next() % 1000])
                    precondition(v?.count == 3, "near-cache-get-blocking: wrong value")
                }
            })
        }
        var b = blocking
        b.usPerOp = blocking.tandem * 1e6
        b.referenceUsPerOp = blocking.reference * 1e6
        return [async, b]
    }

    /// `near-cache-staleness`: a writer (a cache without the near cache, on a plain thread) sets one
    /// key to 1, 2, 3... every millisecond while 64 tasks read it through the near cache. For each
    /// acknowledged value, the time from the writer's acknowledgement to the first read returning it
    /// or a later one (p50, p99, max); and the reads that returned a value older than the writer's last acknowledged
    /// one by more than 2 ms (measured from the read's start: a read sent before a write may rightly
    /// return the value before it).
    func staleness(tasks: Int = 64) async throws -> BenchResult {
        let writerCache = try cache(near: false)
        let near = try cache(near: true)
        try await writerCache.async.set("stale", 0, timeout: .never)
        try await warm(near, ["stale"])
        let shared = StalenessCounters()
        let stop = StopFlag()
        let writes = max(2000, Int(seconds * 2000))
        let writer = Task.detached {
            try await Bridge.offload {
                var ackTimes: [ContinuousClock.Instant] = [.now]
                for i in 1...writes {
                    try writerCache.set("stale", i, timeout: .never)
                    let now = ContinuousClock.now
                    shared.acked.locked { $0 = (i, now) }
                    ackTimes.append(now)
                    usleep(1000)
                }
                return ackTimes
            }
        }
        let seen = try await withThrowingTaskGroup(of: [(Int, ContinuousClock.Instant)].self) { group in
            for _ in 0..<tasks {
                group.addTask {
                    var firstSeen: [(Int, ContinuousClock.Instant)] = []
                    var last = -1
                    var n = 0
                    while !stop.value.load(ordering: .relaxed) {
                        let before = shared.acked.locked { $0 }
                        let start = ContinuousClock.now
                        let v: Int = try await near.async.get("stale") ?? -1
                        let now = ContinuousClock.now
                        if v < before.value && start - before.at > .milliseconds(2) { shared.staleReads.add(1, ordering: .relaxed) }
                        if v > last {
                            firstSeen.append((v, now))
                            last = v
                        }
                        n += 1
                        if n & 63 == 0 { await Task.yield() }
                    }
                    shared.reads.add(n, ordering: .relaxed)
                    return firstSeen
                }
            }
            let ackTimes = try await writer.value
            try await Task.sleep(for: .milliseconds(50))
            stop.value.store(true, ordering: .relaxed)
            // For each acknowledged value, the first time any read returned it or a later one (a
            // value no read returned, overwritten before anyone looked, counts from the first read of
            // a later one: a stall shows here).
            var sightings: [(Int, ContinuousClock.Instant)] = []
            for try await list in group { sightings += list }
            sightings.sort { $0.0 > $1.0 }
            var delays: [Double] = []
            var index = 0
            var earliest: ContinuousClock.Instant?
            for w in stride(from: ackTimes.count - 1, through: 1, by: -1) {
                while index < sightings.count, sightings[index].0 >= w {
                    earliest = earliest.map { min($0, sightings[index].1) } ?? sightings[index].1
                    index += 1
                }
                guard let seenAt = earliest else { continue }
                let d = seenAt - ackTimes[w]
                delays.append(max(0, Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15))
            }
            return delays
        }
        var result = BenchResult(scenario: "near-cache-staleness", reference: 2, tandem: percentile(seen, 0.99), unit: "ms", ratio: percentile(seen, 0.99) / 2, better: "lower")
        result.p50Ms = percentile(seen, 0.50)
        result.p99Ms = percentile(seen, 0.99)
        result.maxMs = seen.max() ?? 0
        result.staleReads = shared.staleReads.load(ordering: .relaxed)
        result.valuesSeen = seen.count
        result.reads = shared.reads.load(ordering: .relaxed)
        return result
    }
}

/// What the staleness scenario's writer and readers share.
private final class StalenessCounters: Sendable {
    /// The writer's last acknowledged value and when it was acknowledged.
    let acked = Mutex<(value: Int, at: ContinuousClock.Instant)>((0, .now))
    let staleReads = Atomic<Int>(0)
    let reads = Atomic<Int>(0)
}
