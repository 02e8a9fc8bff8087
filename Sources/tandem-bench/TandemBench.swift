import ArgumentParser
import Foundation
import Synchronization
import Tandem

/// One benchmark line: the reference and Tandem measured in the same run.
struct BenchResult: Encodable {
    let scenario: String
    let reference: Double
    let tandem: Double
    let unit: String
    let ratio: Double
    let better: String
    /// How many times the producer ran (the stampede scenario).
    var producerRuns: Int? = nil
    /// Extra requests hedging sent, in percent of the requests (hedged-fanout).
    var extraRequestsPercent: Double? = nil
    /// Client CPU (user + system, all threads) per operation on Tandem's side, in microseconds.
    var cpuUsPerOp: Double? = nil
    /// The same for the reference.
    var referenceCpuUsPerOp: Double? = nil
    /// Tandem's process thread count during the run.
    var threads: Int? = nil
    /// Gets the reference missed (memcached-async-get; 0 when it did the same work).
    var referenceMisses: Int? = nil
    /// A second reference that pipelines (redis-async-get: `redis-benchmark -P 16`) and Tandem against it.
    var referencePipelined: Double? = nil
    var ratioPipelined: Double? = nil
    /// Latency percentiles of one operation, microseconds (Tandem's side, and the reference's where it reports them).
    var p50Us: Double? = nil
    var p99Us: Double? = nil
    var referenceP50Us: Double? = nil
    var referenceP99Us: Double? = nil
    /// http-small-gets: the C loop on curl's multi-socket API (Tandem's design floor), Tandem against it, its CPU.
    var referenceSocket: Double? = nil
    var ratioSocket: Double? = nil
    var referenceSocketCpuUsPerOp: Double? = nil
    /// inflight-10k: peak growth of resident memory, megabytes.
    var rssGrowthMB: Double? = nil
    /// redis-tls-async-get: Tandem's plain-TCP GETs in the same run, TLS against them, and what TLS
    /// adds in client CPU per GET.
    var tandemPlain: Double? = nil
    var ratioToPlain: Double? = nil
    var tlsCpuUsPerOp: Double? = nil
    /// The reference when it is not the scenario's usual one (`ahc-peer`: "async-http-client").
    var referenceName: String? = nil
    /// Loop-group lines: CPU of the loop threads alone per operation (Tandem's side, the reference's side).
    var loopCpuUsPerOp: Double? = nil
    var referenceLoopCpuUsPerOp: Double? = nil
    /// Microseconds per operation (per-operation lines), Tandem's and the reference's.
    var usPerOp: Double? = nil
    var referenceUsPerOp: Double? = nil
    /// near-cache-staleness: milliseconds from a write's acknowledgement to the first read of it, the
    /// reads that returned a value older than the last acknowledged write by more than 2 ms, the
    /// values the readers saw and their reads.
    var p50Ms: Double? = nil
    var p99Ms: Double? = nil
    var maxMs: Double? = nil
    var staleReads: Int? = nil
    var valuesSeen: Int? = nil
    var reads: Int? = nil

    enum CodingKeys: String, CodingKey {
        case scenario, reference, tandem, unit, ratio, better
        case producerRuns = "producer_runs"
        case extraRequestsPercent = "extra_requests_pct"
        case cpuUsPerOp = "cpu_us_per_op"
        case referenceCpuUsPerOp = "reference_cpu_us_per_op"
        case threads
        case referenceMisses = "reference_misses"
        case referencePipelined = "reference_pipelined"
        case ratioPipelined = "ratio_pipelined"
        case p50Us = "p50_us"
        case p99Us = "p99_us"
        case referenceP50Us = "reference_p50_us"
        case referenceP99Us = "reference_p99_us"
        case referenceSocket = "reference_socket"
        case ratioSocket = "ratio_socket"
        case referenceSocketCpuUsPerOp = "reference_socket_cpu_us_per_op"
        case rssGrowthMB = "rss_growth_mb"
        case tandemPlain = "tandem_plain"
        case ratioToPlain = "ratio_to_plain"
        case tlsCpuUsPerOp = "tls_cpu_us_per_op"
        case referenceName = "reference_name"
        case loopCpuUsPerOp = "loop_cpu_us_per_op"
        case referenceLoopCpuUsPerOp = "reference_loop_cpu_us_per_op"
        case usPerOp = "us_per_op"
        case referenceUsPerOp = "reference_us_per_op"
        case p50Ms = "p50_ms"
        case p99Ms = "p99_ms"
        case maxMs = "max_ms"
        case staleReads = "stale_reads"
        case valuesSeen = "values_seen"
        case reads
    }

    /// Prints the JSON line that `Integration/bench.sh` collects.
    func emit() {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        if let data = try? encoder.encode(self), let line = String(data: data, encoding: .utf8) {
            print(line)
            fflush(nil)
        }
    }
}

/// Runs `body` on `threads` threads for about `seconds`; returns operations per second in total.
/// `body(thread, iteration)` does one operation.
func throughput(threads: Int, seconds: Double, _ body: @escaping @Sendable (Int, Int) -> Void) -> Double {
    let stop = Atomic<Bool>(false)
    let total = Atomic<Int>(0)
    let ready = DispatchGroup()
    let done = DispatchGroup()
    let start = DispatchSemaphore(value: 0)
    for t in 0..<threads {
        ready.enter()
        done.enter()
        let thread = Thread {
            ready.leave()
            start.wait()
            var n = 0
            while !stop.load(ordering: .relaxed) {
                for _ in 0..<256 { body(t, n); n &+= 1 }
            }
            total.add(n, ordering: .relaxed)
            done.leave()
        }
        thread.start()
    }
    ready.wait()
    let begin = DispatchTime.now().uptimeNanoseconds
    for _ in 0..<threads { start.signal() }
    Thread.sleep(forTimeInterval: seconds)
    stop.store(true, ordering: .relaxed)
    done.wait()
    let elapsed = Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e9
    return Double(total.load(ordering: .relaxed)) / elapsed
}

/// Measures reference and Tandem alternately `rounds` times and keeps the best of each, so that both
/// see the same machine state.
func compare(_ name: String, rounds: Int, unit: String = "ops/s", better: String = "higher",
             reference: () throws -> Double, tandem: () throws -> Double) rethrows -> BenchResult {
    var ref: [Double] = []
    var tan: [Double] = []
    for _ in 0..<rounds {
        ref.append(try reference())
        tan.append(try tandem())
    }
    let pick: ([Double]) -> Double = { better == "higher" ? ($0.max() ?? 0) : ($0.min() ?? 0) }
    let r = pick(ref)
    let t = pick(tan)
    return BenchResult(scenario: name, reference: r, tandem: t, unit: unit, ratio: r == 0 ? 0 : t / r, better: better)
}

/// The floor for LocMem: a mutex-protected dictionary, the least a thread-safe in-process cache does.
final class DictionaryFloor: Sendable {
    let dict = Mutex<[String: [UInt8]]>([:])
    func get(_ k: String) -> [UInt8]? { dict.locked { $0[k] } }
    func set(_ k: String, _ v: [UInt8]) { dict.locked { $0[k] = v } }
}

struct LocMemScenario {
    let seconds: Double
    let rounds: Int

    func run() async throws -> [BenchResult] {
        let keys = (0..<1024).map { "bench-key-\($0)" }
        let value = [UInt8](repeating: 7, count: 16)
        let floor = DictionaryFloor()
        let caches = try Caches(settings: [
            "default": CacheSettings(backend: "locmem", location: ["bench-\(UUID())"], options: ["MAX_ENTRIES": 100_000])
        ])
        let cache = caches.default
        for k in keys {
            floor.set(":1:" + k, value)
            try await cache.async.set(k, value)
        }
        let sink = Atomic<Int>(0)
        var results: [BenchResult] = []
        for threads in [1, 2] {
            results.append(compare("locmem-get-\(threads)t", rounds: rounds, reference: {
                throughput(threads: threads, seconds: seconds) { t, i in
                    if let v = floor.get(":1:" + keys[(i &+ t &* 512) & 1023]) { sink.add(v.count, ordering: .relaxed) }
                }
            }, tandem: {
                throughput(threads: threads, seconds: seconds) { t, i in
                    if let v: [UInt8] = try? cache.get(keys[(i &+ t &* 512) & 1023]) { sink.add(v.count, ordering: .relaxed) }
                }
            }))
            results.append(compare("locmem-set-\(threads)t", rounds: rounds, reference: {
                throughput(threads: threads, seconds: seconds) { t, i in
                    floor.set(":1:" + keys[(i &+ t &* 512) & 1023], value)
                }
            }, tandem: {
                throughput(threads: threads, seconds: seconds) { t, i in
                    try? cache.set(keys[(i &+ t &* 512) & 1023], value)
                }
            }))
        }
        return results
    }
}

@main
struct TandemBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tandem-bench",
        abstract: "Side-by-side benchmarks: a reference and Tandem in the same run, one JSON line per scenario.")

    static let known = ["locmem", "loop-roundtrip", "bridge-overhead", "redis-async-get", "redis-tls-async-get", "redis-cluster-async-get", "redis-sync-get",
                        "memcached-async-get", "memcached-sync-get", "http-fanout-delay", "http-small-gets", "stampede", "hedged-fanout", "http-cached-get", "inflight-10k", "ahc-peer", "loop-group",
                        "near-cache-get", "near-cache-staleness", "django-codec"]

    @Argument(help: "Scenarios to run: locmem, loop-roundtrip, bridge-overhead, redis-async-get, redis-tls-async-get, redis-cluster-async-get, redis-sync-get, memcached-async-get, memcached-sync-get, http-fanout-delay, http-small-gets, stampede, hedged-fanout, http-cached-get, inflight-10k, ahc-peer, loop-group, near-cache-get, near-cache-staleness, django-codec.")
    var scenarios: [String] = ["locmem"]

    @Option(help: "Seconds per measurement.")
    var seconds: Double = 1.0

    @Option(help: "Operations per measurement for per-operation scenarios.")
    var iterations: Int = 100_000

    @Option(help: "Alternating rounds per scenario (best of each side is kept).")
    var rounds: Int = 3

    @Option(help: "Redis server for the redis-* scenarios.")
    var redis: String = "redis://127.0.0.1:6379"

    @Option(help: "The compiled C reference loop for redis-sync-get (Integration/bench/redis_sync_get.c).")
    var redisReference: String?

    @Option(name: .customLong("redis-tls"), help: "Redis over TLS for redis-tls-async-get (rediss://localhost:port).")
    var redisTLS: String?

    @Option(name: .customLong("redis-tls-plain"), help: "The same server's plain port (redis://127.0.0.1:port), for redis-tls-async-get's plain-TCP side.")
    var redisTLSPlain: String?

    @Option(name: .customLong("redis-cluster"), help: "Redis Cluster nodes (host:port,...) for redis-cluster-async-get.")
    var redisCluster: String?

    @Option(name: .customLong("redis-tls-ca"), help: "The CA file that signed --redis-tls's certificate.")
    var redisTLSCA: String?

    @Option(help: "memcached server (host:port) for the memcached-* scenarios.")
    var memcached: String = "127.0.0.1:11211"

    @Option(help: "The compiled C reference loop for memcached-sync-get (Integration/bench/memcached_sync_get.c).")
    var memcachedReference: String?

    @Option(help: "HTTP upstream base URL for http-fanout-delay (Integration/upstream.py).")
    var upstream: String = "http://127.0.0.1:8081"

    @Option(help: "URL of a small static file (nginx) for http-small-gets.")
    var smallFile: String = "http://127.0.0.1:8082/small.txt"

    @Option(help: "The compiled C reference loop for http-small-gets (Integration/bench/curl_multi_gets.c).")
    var curlReference: String?

    @Option(name: .customLong("ahc-peer"), help: "The async-http-client peer (Integration/peer, built in release) for the ahc-peer scenario.")
    var ahcPeer: String?

    @Option(help: "A Python 3 for django-codec's reference (CPython's C pickle).")
    var python: String?

    func run() async throws {
        for scenario in scenarios {
            switch scenario {
            case "locmem":
                for r in try await LocMemScenario(seconds: seconds, rounds: rounds).run() { r.emit() }
            case "loop-roundtrip":
                for r in try LoopScenarios(iterations: iterations, rounds: rounds).roundTrip() { r.emit() }
            case "bridge-overhead":
                for r in try LoopScenarios(iterations: iterations, rounds: rounds).bridgeOverhead() { r.emit() }
            case "redis-async-get":
                try await RedisScenarios(url: redis, seconds: seconds, rounds: rounds, referenceBinary: redisReference).asyncGet().emit()
            case "redis-tls-async-get":
                guard let redisTLS, let redisTLSPlain, let redisTLSCA else {
                    throw ValidationError("redis-tls-async-get needs --redis-tls, --redis-tls-plain and --redis-tls-ca")
                }
                try await RedisScenarios(url: redisTLSPlain, seconds: seconds, rounds: rounds, referenceBinary: redisReference)
                    .tlsAsyncGet(tlsURL: redisTLS, caFile: redisTLSCA).emit()
            case "redis-cluster-async-get":
                guard let redisCluster else { throw ValidationError("redis-cluster-async-get needs --redis-cluster") }
                try await RedisScenarios(url: redis, seconds: seconds, rounds: rounds, referenceBinary: redisReference)
                    .clusterAsyncGet(seeds: redisCluster).emit()
            case "redis-async-get-tasks-on-loop":
                // The same, with the tasks' executor preference set to the loop (they resume there, no hop).
                try await RedisScenarios(url: redis, seconds: seconds, rounds: rounds, referenceBinary: redisReference).asyncGet(onLoop: true).emit()
            case "redis-sync-get":
                let s = RedisScenarios(url: redis, seconds: seconds, rounds: rounds, referenceBinary: redisReference)
                try await Bridge.offload { try s.syncGet() }.emit()
            case "memcached-async-get":
                try await MemcachedScenarios(server: memcached, seconds: seconds, rounds: rounds, referenceBinary: memcachedReference).asyncGet().emit()
            case "memcached-sync-get":
                let s = MemcachedScenarios(server: memcached, seconds: seconds, rounds: rounds, referenceBinary: memcachedReference)
                try await Bridge.offload { try s.syncGet() }.emit()
            case "http-fanout-delay":
                try await HTTPScenarios(seconds: seconds, rounds: max(rounds, 5)).fanOutDelay(upstream: upstream).emit()
            case "http-small-gets":
                guard let curlReference else { throw ValidationError("http-small-gets needs --curl-reference") }
                try await HTTPScenarios(seconds: seconds, rounds: rounds).smallGets(url: smallFile, reference: curlReference).emit()
            case "ahc-peer":
                guard let ahcPeer else { throw ValidationError("ahc-peer needs --ahc-peer (Integration/bench.sh ahc-peer builds it)") }
                for r in try await HTTPScenarios(seconds: seconds, rounds: rounds)
                    .againstAsyncHTTPClient(smallURL: smallFile, upstream: upstream, peer: ahcPeer) { r.emit() }
            case "http-cached-get":
                try await HTTPScenarios(seconds: seconds, rounds: rounds).cachedGet(upstream: upstream).emit()
            case "hedged-fanout":
                try await HTTPScenarios(seconds: seconds, rounds: rounds).hedgedFanOut(upstream: upstream).emit()
            case "inflight-10k":
                try await InflightScenario(redis: redis, upstream: upstream, seconds: max(seconds, 3)).run().emit()
            case "loop-group":
                for r in try await LoopGroupScenario(redis: redis, smallFile: smallFile, seconds: seconds, rounds: rounds).run() { r.emit() }
            case "near-cache-get":
                for r in try await NearCacheScenarios(url: redis, seconds: seconds, rounds: rounds).get() { r.emit() }
            case "django-codec":
                guard let python else { throw ValidationError("django-codec needs --python (a Python 3 for the pickle reference)") }
                let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                    .appendingPathComponent("Integration/bench/pickle_reference.py").path
                for r in try DjangoCodecScenario(python: python, script: script, seconds: seconds, rounds: rounds).run() { r.emit() }
            case "near-cache-staleness":
                try await NearCacheScenarios(url: redis, seconds: max(seconds, 2), rounds: rounds).staleness().emit()
            case "stampede":
                try await StampedeScenario(rounds: max(rounds, 5)).run().emit()
            default:
                throw ValidationError("unknown scenario '\(scenario)'; known: \(TandemBench.known.joined(separator: ", "))")
            }
        }
    }
}
