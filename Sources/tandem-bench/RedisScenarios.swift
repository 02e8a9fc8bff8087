import Foundation
import Synchronization
import Tandem

/// Runs a program and returns its standard output.
func runTool(_ path: String, _ args: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.standardError
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw BenchError("\(path) exited with \(p.terminationStatus)") }
    return String(decoding: data, as: UTF8.self)
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Operations per second of `tasks` concurrent tasks each running `body` in a loop for `seconds`.
func asyncThroughput(tasks: Int, seconds: Double, executor: (any TaskExecutor)? = nil,
                     _ body: @escaping @Sendable () async throws -> Void) async throws -> Double {
    let stop = StopFlag()
    let clock = ContinuousClock()
    let start = clock.now
    let total = try await withThrowingTaskGroup(of: Int.self) { group in
        // A task with an executor preference pays for it on every hop (the runtime looks the
        // preference up under the task's status lock), so only the on-loop variants ask for one.
        let work: @Sendable () async throws -> Int = {
            var n = 0
            while !stop.value.load(ordering: .relaxed) {
                try await body()
                n += 1
            }
            return n
        }
        for _ in 0..<tasks {
            if let executor {
                group.addTask(executorPreference: executor, operation: work)
            } else {
                group.addTask(operation: work)
            }
        }
        try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
        stop.value.store(true, ordering: .relaxed)
        return try await group.reduce(0, +)
    }
    let elapsed = clock.now - start
    return Double(total) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
}

/// One run of redis-benchmark's GET test.
struct RedisBenchmarkRun {
    let requestsPerSecond: Double
    let p50Ms: Double
    let p99Ms: Double
    /// Client CPU (user + system of the benchmark process) per request, microseconds.
    let cpuUsPerRequest: Double
}

/// Runs `redis-benchmark -t get` with `target` (`-h host -p port`, plus `--tls ...` or `--cluster`).
func redisBenchmarkGets(_ target: [String], clients: Int, pipeline: Int, requests: Int, extra: [String] = []) throws -> RedisBenchmarkRun {
    let before = CPUTime.children()
    let csv = try runTool("/usr/bin/redis-benchmark", target + ["-c", String(clients), "-P", String(pipeline), "-t", "get",
                                                                "-n", String(requests), "--csv"] + extra)
    // "GET","84033.61","0.452","0.128","0.431","0.671","0.855","1.551" (rps, avg, min, p50, p95, p99, max)
    let line = csv.split(separator: "\n").first { $0.hasPrefix("\"GET\"") } ?? ""
    let f = line.split(separator: ",").map { Double($0.replacingOccurrences(of: "\"", with: "")) }
    guard f.count >= 7, let rps = f[1] else { throw BenchError("cannot parse redis-benchmark output: \(csv)") }
    return RedisBenchmarkRun(requestsPerSecond: rps, p50Ms: f[4] ?? 0, p99Ms: f[6] ?? 0,
                             cpuUsPerRequest: (CPUTime.children() - before) / Double(requests) * 1e6)
}

/// `tasks` tasks reading 3-byte values through `cache.async` for `seconds` (`key` picks each GET's
/// key): GETs per second and this process's CPU per GET in microseconds.
func tandemGets(_ cache: Cache, tasks: Int, seconds: Double, key: @escaping @Sendable () -> String) async throws -> (rate: Double, cpuUsPerOp: Double) {
    let counter = Counter()
    let before = CPUTime.process()
    let rate = try await asyncThroughput(tasks: tasks, seconds: seconds) {
        _ = counter.next()
        let v: [UInt8]? = try await cache.async.get(key())
        if v?.count != 3 { throw BenchError("wrong value") }
    }
    return (rate, (CPUTime.process() - before) / Double(max(1, counter.next())) * 1e6)
}

struct RedisScenarios {
    let url: String
    let seconds: Double
    let rounds: Int
    let referenceBinary: String?

    var hostPort: (String, Int) {
        var s = Substring(url)
        if let r = s.range(of: "://") { s = s[r.upperBound...] }
        if let slash = s.firstIndex(of: "/") { s = s[..<slash] }
        let parts = s.split(separator: ":")
        return (String(parts[0]), Int(parts.count > 1 ? parts[1] : "6379") ?? 6379)
    }

    func cache() throws -> Cache {
        try Caches(settings: ["default": CacheSettings(backend: "redis", location: [url])]).default
    }

    /// 64 tasks doing async GETs of a 3-byte value, against `redis-benchmark -c 64 -P 1 -t get` on the
    /// same server reading a 3-byte value too (the key it reads, `key:__rand_int__`, is set first), and
    /// against `redis-benchmark -c 64 -P 16` (pipelined, the server's limit here). Also: client CPU per
    /// GET on both sides (Tandem: the CPU time of all its rounds over all their GETs; redis-benchmark:
    /// the median round) and p50/p99 latency (Tandem: one GET in 16 timed; redis-benchmark: its own).
    /// Each round's figures, and how often the loop thread went to sleep in it, go to standard error.
    func asyncGet(tasks: Int = 64, onLoop: Bool = false) async throws -> BenchResult {
        let cache = try cache()
        try await cache.async.set("bench", "xxx", timeout: .never)
        let (host, port) = hostPort
        _ = try runTool("/usr/bin/redis-cli", ["-h", host, "-p", String(port), "SET", "key:__rand_int__", "xxx"])
        var ref: [Double] = []
        var refPipelined: [Double] = []
        var refCPU: [Double] = []
        var refP50: [Double] = []
        var refP99: [Double] = []
        var tan: [Double] = []
        var tanCPU: [Double] = []
        var tanTally = CPUTally()
        var latencies: [Double] = []
        let n = max(50_000, Int(seconds * 80_000))
        func benchmark(pipeline: Int, requests: Int) throws -> (Double, Double, Double, Double) {
            let r = try redisBenchmarkGets(["-h", host, "-p", String(port)], clients: tasks, pipeline: pipeline, requests: requests)
            return (r.requestsPerSecond, r.p50Ms, r.p99Ms, r.cpuUsPerRequest)
        }
        for _ in 0..<rounds {
            let (rps, p50, p99, cpu) = try benchmark(pipeline: 1, requests: n)
            ref.append(rps)
            refP50.append(p50 * 1000)
            refP99.append(p99 * 1000)
            refCPU.append(cpu)
            refPipelined.append(try benchmark(pipeline: 16, requests: n * 4).0)
            let counter = Counter()
            let samples = LatencySamples()
            let before = CPUTime.process()
            let parksBefore = loopThreadParks()
            tan.append(try await asyncThroughput(tasks: tasks, seconds: seconds, executor: onLoop ? EventLoops.shared : nil) {
                let timed = counter.next() & 15 == 0
                let start = timed ? ContinuousClock.now : nil
                let v: [UInt8]? = try await cache.async.get("bench")
                if let start { samples.add(ContinuousClock.now - start) }
                if v?.count != 3 { throw BenchError("wrong value") }
            })
            tanCPU.append(tanTally.add(seconds: CPUTime.process() - before, operations: counter.next()))
            latencies += samples.microseconds
            FileHandle.standardError.write(Data(String(format: "redis-async-get round: redis-benchmark %.0f GET/s %.2f us CPU/GET; tandem %.0f GET/s %.2f us CPU/GET, loop thread parked %d times\n",
                                                       rps, cpu, tan.last ?? 0, tanCPU.last ?? 0, loopThreadParks() - parksBefore).utf8))
        }
        let r = ref.max() ?? 0
        let t = tan.max() ?? 0
        var result = BenchResult(scenario: onLoop ? "redis-async-get-tasks-on-loop" : "redis-async-get", reference: r, tandem: t, unit: "ops/s", ratio: t / r, better: "higher")
        let rp = refPipelined.max() ?? 0
        result.referencePipelined = rp
        result.ratioPipelined = rp > 0 ? t / rp : nil
        // The process's CPU time over all the Tandem rounds divided by all their GETs (issue 16's
        // definition); the per-round figures are on standard error.
        result.cpuUsPerOp = tanTally.microsecondsPerOperation
        result.referenceCpuUsPerOp = median(refCPU)
        result.p50Us = percentile(latencies, 0.50)
        result.p99Us = percentile(latencies, 0.99)
        result.referenceP50Us = median(refP50)
        result.referenceP99Us = median(refP99)
        return result
    }

    /// 64 tasks doing async GETs of a 3-byte value over TLS (`tlsURL`, a server that also listens in
    /// plain text at `url`), against `redis-benchmark --tls -c 64 -P 1 -t get` on the TLS port reading a
    /// 3-byte value too; in the same rounds, Tandem's GETs over plain TCP, so that the line says what
    /// TLS costs a GET (throughput and client CPU).
    func tlsAsyncGet(tasks: Int = 64, tlsURL: String, caFile: String) async throws -> BenchResult {
        let plain = try cache()
        let secure = try Caches(settings: ["default": CacheSettings(backend: "redis", location: [tlsURL], options: ["SSL_CA_CERTS": .string(caFile)])]).default
        try await plain.async.set("bench", "xxx", timeout: .never)
        let (host, port) = hostPort
        _ = try runTool("/usr/bin/redis-cli", ["-h", host, "-p", String(port), "SET", "key:__rand_int__", "xxx"])
        let tlsPort = String(tlsURL.split(separator: ":").last ?? "")
        let n = max(50_000, Int(seconds * 40_000))
        var ref: [Double] = [], refCPU: [Double] = [], tan: [Double] = [], tanCPU: [Double] = [], plainRates: [Double] = [], plainCPU: [Double] = []
        for _ in 0..<rounds {
            let r = try redisBenchmarkGets(["--tls", "--cacert", caFile, "-h", "localhost", "-p", tlsPort], clients: tasks, pipeline: 1, requests: n)
            ref.append(r.requestsPerSecond)
            refCPU.append(r.cpuUsPerRequest)
            let (t, tc) = try await tandemGets(secure, tasks: tasks, seconds: seconds) { "bench" }
            tan.append(t)
            tanCPU.append(tc)
            let (p, pc) = try await tandemGets(plain, tasks: tasks, seconds: seconds) { "bench" }
            plainRates.append(p)
            plainCPU.append(pc)
        }
        let r = ref.max() ?? 0
        let t = tan.max() ?? 0
        let p = plainRates.max() ?? 0
        var result = BenchResult(scenario: "redis-tls-async-get", reference: r, tandem: t, unit: "ops/s", ratio: r == 0 ? 0 : t / r, better: "higher")
        result.cpuUsPerOp = median(tanCPU)
        result.referenceCpuUsPerOp = median(refCPU)
        result.tandemPlain = p
        result.ratioToPlain = p == 0 ? nil : t / p
        result.tlsCpuUsPerOp = median(tanCPU) - median(plainCPU)
        return result
    }

    /// 64 tasks doing async GETs of 3-byte values over a Redis Cluster (`seeds`: `host:port,...`), each
    /// task its own key, the 64 keys spread over every primary; against `redis-benchmark --cluster -c 64
    /// -P 1 -t get` on the same cluster, reading the 3-byte keys it set first (`-t set -d 3`).
    func clusterAsyncGet(tasks: Int = 64, seeds: String) async throws -> BenchResult {
        let cache = try Caches(settings: ["default": CacheSettings(backend: "redis", location: ["redis+cluster://\(seeds)"])]).default
        let keys = (0..<tasks).map { "bench-\($0)" }
        for k in keys { try await cache.async.set(k, "xxx", timeout: .never) }
        let first = seeds.split(separator: ",")[0].split(separator: ":")
        let target = ["--cluster", "-h", String(first[0]), "-p", String(first[1])]
        _ = try runTool("/usr/bin/redis-benchmark", target + ["-t", "set", "-d", "3", "-n", "10000", "-c", "8", "--csv"])
        let n = max(100_000, Int(seconds * 100_000))
        var ref: [Double] = [], refCPU: [Double] = [], tan: [Double] = [], tanCPU: [Double] = []
        for _ in 0..<rounds {
            let r = try redisBenchmarkGets(target, clients: tasks, pipeline: 1, requests: n, extra: ["-d", "3"])
            ref.append(r.requestsPerSecond)
            refCPU.append(r.cpuUsPerRequest)
            let next = Counter()
            let (t, tc) = try await tandemGets(cache, tasks: tasks, seconds: seconds) { keys[next.next() % keys.count] }
            tan.append(t)
            tanCPU.append(tc)
        }
        let r = ref.max() ?? 0
        let t = tan.max() ?? 0
        var result = BenchResult(scenario: "redis-cluster-async-get", reference: r, tandem: t, unit: "ops/s", ratio: r == 0 ? 0 : t / r, better: "higher")
        result.cpuUsPerOp = median(tanCPU)
        result.referenceCpuUsPerOp = median(refCPU)
        return result
    }

    /// One thread of blocking GETs, against a C loop over raw blocking hiredis: seconds per GET.
    func syncGet() throws -> BenchResult {
        guard let referenceBinary else { throw BenchError("redis-sync-get needs --redis-reference (the compiled C loop)") }
        let cache = try cache()
        try Bridge.blocking { try await cache.async.set("bench", "xxx", timeout: .never) }
        let (host, port) = hostPort
        let iterations = max(20_000, Int(seconds * 15_000))
        // Loopback round trips on shared virtual machines are noisy: at least 5 alternating rounds.
        return try compare("redis-sync-get", rounds: max(rounds, 5), unit: "s", better: "lower", reference: {
            guard let v = Double(try runTool(referenceBinary, [host, String(port), ":1:bench", String(seconds)])
                .trimmingCharacters(in: .whitespacesAndNewlines)) else { throw BenchError("bad reference output") }
            return v
        }, tandem: {
            secondsPerOp(iterations: iterations) {
                let v: [UInt8]? = try? cache.get("bench")
                precondition(v?.count == 3, "redis-sync-get: wrong value")
            }
        })
    }
}

/// A stop flag that escaping closures can share.
final class StopFlag: Sendable {
    let value = Atomic<Bool>(false)
}

/// Latencies recorded by concurrent tasks.
final class LatencySamples: Sendable {
    private let values = Mutex<[Double]>([])
    func add(_ d: Duration) {
        let us = Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
        values.locked { $0.append(us) }
    }
    var microseconds: [Double] { values.locked { $0 } }
}

/// The `q` quantile (0...1) of `values` (0 for none).
func percentile(_ values: [Double], _ q: Double) -> Double {
    let v = values.sorted()
    guard !v.isEmpty else { return 0 }
    return v[min(v.count - 1, Int(Double(v.count) * q))]
}
