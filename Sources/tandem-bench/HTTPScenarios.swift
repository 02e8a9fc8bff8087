import Foundation
import Synchronization
import Tandem

struct HTTPScenarios {
    let seconds: Double
    let rounds: Int

    /// Fan-out of 100 requests to `/delay/50` on the asyncio upstream: wall time against the 50 ms floor.
    func fanOutDelay(upstream: String) async throws -> BenchResult {
        var config = UpstreamClientConfiguration()
        config.requestTimeout = .seconds(10)
        let http = UpstreamClient(configuration: config)
        let wall = try await fanOutWall(http, url: upstream + "/delay/50", count: 100)
        await http.shutdown()
        return BenchResult(scenario: "http-fanout-delay", reference: 0.050, tandem: wall, unit: "s", ratio: wall / 0.050, better: "lower")
    }

    /// The median wall time, in seconds, of `rounds` fan-outs of `count` GETs of `url` (after an
    /// untimed one that opens the connections).
    func fanOutWall(_ http: UpstreamClient, url: String, count: Int) async throws -> Double {
        let requests = (0..<count).map { _ in UpstreamRequest(.get, url) }
        let clock = ContinuousClock()
        var walls: [Double] = []
        for round in 0..<(rounds + 1) {
            let start = clock.now
            let results = await http.async.fanOut(requests)
            let d = clock.now - start
            guard results.allSatisfy({ (try? $0.get())?.status == 200 }) else { throw BenchError("fan-out had failures") }
            if round > 0 { walls.append(Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18) }  // round 0 opens the connections
        }
        return walls.sorted()[walls.count / 2]
    }

    /// `http-cached-get`: 64 tasks GETting a fresh, cacheable upstream response (`max-age=3600`) for
    /// `seconds`: every request to the upstream (the reference) against the same requests answered
    /// from a LocMem response cache, same run.
    func cachedGet(upstream: String, concurrency: Int = 64) async throws -> BenchResult {
        let url = upstream + "/cacheable?id=bench-\(UInt32.random(in: 0 ... .max))&cc=max-age%3D3600&etag=b"
        let store = try Caches(settings: ["default": CacheSettings(backend: "locmem", location: ["bench-http-\(UInt64.random(in: 0 ... .max))"])]).default
        var cachedConfig = UpstreamClientConfiguration()
        cachedConfig.responseCaching = ResponseCaching(cache: store)
        let plain = UpstreamClient()
        let cached = UpstreamClient(configuration: cachedConfig)
        func run(_ http: UpstreamClient) async throws -> Double {
            let clock = ContinuousClock()
            let until = clock.now + .milliseconds(Int(seconds * 1000))
            let start = clock.now
            let total = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<concurrency {
                    group.addTask {
                        var n = 0
                        while clock.now < until {
                            guard try await http.async.get(url).status == 200 else { throw BenchError("http-cached-get: not 200") }
                            n += 1
                        }
                        return n
                    }
                }
                return try await group.reduce(0, +)
            }
            let d = clock.now - start
            return Double(total) / (Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
        }
        _ = try await cached.async.get(url)  // stores it
        var ref: [Double] = []
        var tan: [Double] = []
        for _ in 0..<rounds {
            ref.append(try await run(plain))
            tan.append(try await run(cached))
        }
        await plain.shutdown()
        await cached.shutdown()
        let r = ref.max() ?? 0
        let t = tan.max() ?? 0
        return BenchResult(scenario: "http-cached-get", reference: r, tandem: t, unit: "ops/s", ratio: r == 0 ? 0 : t / r, better: "higher")
    }

    /// `hedged-fanout`: pages of 20 calls to an upstream whose answers take 5 ms, 2 % of them 200 ms
    /// (`/jitter`): the 99th percentile of the page time without hedging (the reference) and with it
    /// (a copy after 20 ms and another after 40 ms, while no answer has come), the same pages in the same run, and the extra requests hedging sent.
    func hedgedFanOut(upstream: String, pages: Int = 300) async throws -> BenchResult {
        var config = UpstreamClientConfiguration()
        config.requestTimeout = .seconds(10)
        let http = UpstreamClient(configuration: config)
        let page = (0..<20).map { _ in UpstreamRequest(.get, upstream + "/jitter?fast=5&slow=200&p=0.02") }
        let hedge = HedgingPolicy(maxAttempts: 3, delay: .fixed(.milliseconds(20)))
        let clock = ContinuousClock()
        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
        _ = await http.async.fanOut(page)  // opens the connections
        var plain: [Double] = []
        var hedged: [Double] = []
        for _ in 0..<pages {
            // Alternate, so that both see the same machine state.
            var start = clock.now
            let a = await http.async.fanOut(page)
            plain.append(seconds(clock.now - start))
            start = clock.now
            let b = await TandemLoop.fanOut(deadline: nil, limit: nil, page.map { r in { try await http.async.send(r, hedge: hedge) } })
            hedged.append(seconds(clock.now - start))
            guard a.allSatisfy({ (try? $0.get())?.status == 200 }), b.allSatisfy({ (try? $0.get())?.status == 200 }) else {
                throw BenchError("hedged-fanout had failures")
            }
        }
        await http.shutdown()
        func p99(_ xs: [Double]) -> Double { xs.sorted()[min(xs.count - 1, Int(Double(xs.count) * 0.99))] }
        let extra = Double(hedge.statistics.extraCopies) / Double(max(1, hedge.statistics.requests)) * 100
        var r = BenchResult(scenario: "hedged-fanout", reference: p99(plain), tandem: p99(hedged), unit: "s",
                            ratio: p99(hedged) / p99(plain), better: "lower")
        r.extraRequestsPercent = (extra * 100).rounded() / 100
        return r
    }

    /// 64 concurrent small GETs in a loop against nginx, against a C loop over raw curl multi.
    /// Each round also runs the reference in its `socket` mode (curl driven the way Tandem drives it)
    /// and reports it on standard error: what curl's multi-socket API costs by itself.
    func smallGets(url: String, reference: String, concurrency: Int = 64) async throws -> BenchResult {
        var config = UpstreamClientConfiguration()
        config.maxConnectionsPerHost = concurrency
        let http = UpstreamClient(configuration: config)
        var ref: [Double] = [], tan: [Double] = [], sock: [Double] = []
        var refCPU: [Double] = [], tanCPU: [Double] = [], sockCPU: [Double] = []
        var ratios: [Double] = [], socketRatios: [Double] = []
        var latencies: [Double] = []
        /// Runs the C reference (perform loop, or "socket": curl's multi-socket API); requests/s and
        /// CPU seconds per request.
        func runReference(_ mode: [String]) throws -> (Double, Double) {
            let before = CPUTime.children()
            guard let r = Double(try runTool(reference, [url, String(concurrency), String(seconds)] + mode)
                .trimmingCharacters(in: .whitespacesAndNewlines)) else { throw BenchError("bad reference output") }
            return (r, (CPUTime.children() - before) / (r * seconds))
        }
        // Median over at least 5 rounds: a round's throughput moves with whatever else the two cores do.
        for _ in 0..<max(rounds, 5) {
            let (r, refCost) = try runReference([])
            ref.append(r)
            refCPU.append(refCost * 1e6)
            let (t, ownCostUs, roundLatencies) = try await smallGetsRound(http, url: url, concurrency: concurrency)
            let ownCost = ownCostUs / 1e6
            tan.append(t)
            tanCPU.append(ownCostUs)
            latencies += roundLatencies
            let (so, socketCost) = try runReference(["socket"])
            sock.append(so)
            sockCPU.append(socketCost * 1e6)
            ratios.append(t / r)
            socketRatios.append(t / so)
            // CPU time per request of each client (user + system): on two cores shared with nginx, this
            // is what decides the throughput, and it is steadier than the throughput itself.
            FileHandle.standardError.write(Data(String(format: "http-small-gets round: perform %.0f req/s %.1f us CPU/req, socket API %.0f req/s %.1f us, tandem %.0f req/s %.1f us (%.2f of perform, %.2f of socket)\n",
                                                       r, refCost * 1e6, so, socketCost * 1e6, t, ownCost * 1e6, t / r, t / so).utf8))
        }
        await http.shutdown()
        var result = BenchResult(scenario: "http-small-gets", reference: median(ref), tandem: median(tan), unit: "ops/s", ratio: median(ratios), better: "higher")
        result.referenceSocket = median(sock)
        result.ratioSocket = median(socketRatios)
        result.cpuUsPerOp = median(tanCPU)
        result.referenceCpuUsPerOp = median(refCPU)
        result.referenceSocketCpuUsPerOp = median(sockCPU)
        result.p50Us = percentile(latencies, 0.50)
        result.p99Us = percentile(latencies, 0.99)
        return result
    }

    /// One timed round of `concurrency` tasks GETting `url` for `seconds`: requests per second, client
    /// CPU (user + system, all threads) per request in microseconds, and the latencies of every 16th request.
    func smallGetsRound(_ http: UpstreamClient, url: String, concurrency: Int) async throws -> (Double, Double, [Double]) {
        let ownCPU = CPUTime.process()
        let counter = Counter()
        let samples = LatencySamples()
        let t = try await asyncThroughput(tasks: concurrency, seconds: seconds,
                                          executor: ProcessInfo.processInfo.environment["TANDEM_BENCH_ON_LOOP"] == "1" ? EventLoops.shared : nil) {
            let start = counter.next() & 15 == 0 ? ContinuousClock.now : nil
            let response = try await http.async.get(url)
            if let start { samples.add(ContinuousClock.now - start) }
            if response.status != 200 { throw BenchError("status \(response.status)") }
        }
        return (t, (CPUTime.process() - ownCPU) / (t * seconds) * 1e6, samples.microseconds)
    }

    /// `ahc-peer`: Tandem against swift-server's async-http-client (`Integration/peer`, run as a child
    /// process) on the same two workloads in the same run. Small GETs: 64 tasks against nginx, each
    /// client allowed 64 connections, alternating rounds (at least 5), medians; fan-out: 100 GETs of
    /// `/delay/50` at once, each client allowed 100 connections, the median round. Ratios are
    /// Tandem / async-http-client.
    func againstAsyncHTTPClient(smallURL: String, upstream: String, peer: String, concurrency: Int = 64) async throws -> [BenchResult] {
        /// Runs the peer and reads its JSON line.
        func runPeer(_ args: [String]) throws -> [String: Any] {
            let out = try runTool(peer, args)
            guard let line = out.split(separator: "\n").last,
                  let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  object["value"] is Double else { throw BenchError("ahc-peer printed no result: \(out)") }
            return object
        }
        var config = UpstreamClientConfiguration()
        config.maxConnectionsPerHost = concurrency
        let http = UpstreamClient(configuration: config)
        var peerOps: [Double] = [], peerCPU: [Double] = [], peerP50: [Double] = [], peerP99: [Double] = []
        var ops: [Double] = [], cpu: [Double] = [], ratios: [Double] = [], latencies: [Double] = []
        _ = try await smallGetsRound(http, url: smallURL, concurrency: concurrency)  // opens Tandem's connections, as the peer does before timing
        for _ in 0..<max(rounds, 5) {
            let p = try runPeer(["small-gets", smallURL, String(concurrency), String(seconds)])
            let (t, tCPU, tLatencies) = try await smallGetsRound(http, url: smallURL, concurrency: concurrency)
            let pOps = p["value"] as? Double ?? 0
            peerOps.append(pOps)
            peerCPU.append(p["cpu_us_per_op"] as? Double ?? 0)
            peerP50.append(p["p50_us"] as? Double ?? 0)
            peerP99.append(p["p99_us"] as? Double ?? 0)
            ops.append(t)
            cpu.append(tCPU)
            latencies += tLatencies
            ratios.append(pOps > 0 ? t / pOps : 0)
            FileHandle.standardError.write(Data(String(format: "ahc-peer small-gets round: async-http-client %.0f req/s %.1f us CPU/req, tandem %.0f req/s %.1f us (%.2f)\n",
                                                       pOps, peerCPU.last ?? 0, t, tCPU, ratios.last ?? 0).utf8))
        }
        await http.shutdown()
        var small = BenchResult(scenario: "http-small-gets", reference: median(peerOps), tandem: median(ops), unit: "ops/s",
                                ratio: median(ratios), better: "higher")
        small.referenceName = "async-http-client"
        small.cpuUsPerOp = median(cpu)
        small.referenceCpuUsPerOp = median(peerCPU)
        small.p50Us = percentile(latencies, 0.50)
        small.p99Us = percentile(latencies, 0.99)
        small.referenceP50Us = median(peerP50)
        small.referenceP99Us = median(peerP99)

        var fanConfig = UpstreamClientConfiguration()
        fanConfig.requestTimeout = .seconds(10)
        fanConfig.maxConnectionsPerHost = 100
        let fanHTTP = UpstreamClient(configuration: fanConfig)
        let peerWall = try runPeer(["fanout", upstream + "/delay/50", "100", String(max(rounds, 5))])["value"] as? Double ?? 0
        let wall = try await HTTPScenarios(seconds: seconds, rounds: max(rounds, 5)).fanOutWall(fanHTTP, url: upstream + "/delay/50", count: 100)
        await fanHTTP.shutdown()
        var fan = BenchResult(scenario: "http-fanout-delay", reference: peerWall, tandem: wall, unit: "s",
                              ratio: peerWall > 0 ? wall / peerWall : 0, better: "lower")
        fan.referenceName = "async-http-client"
        return [small, fan]
    }
}

/// CPU time (user + system, in seconds) of this process or of its finished children.
/// Client CPU time summed over several timed rounds, and per operation: all the rounds' CPU time
/// over all their operations (issue 16's definition of client CPU per operation).
struct CPUTally {
    private var seconds = 0.0
    private var operations = 0

    /// Adds a round's CPU seconds and operations; returns that round's microseconds per operation.
    mutating func add(seconds roundSeconds: Double, operations roundOperations: Int) -> Double {
        seconds += roundSeconds
        operations += roundOperations
        return roundSeconds / Double(max(1, roundOperations)) * 1e6
    }

    /// Microseconds of CPU per operation over every round added.
    var microsecondsPerOperation: Double { seconds / Double(max(1, operations)) * 1e6 }
}

enum CPUTime {
    static func process() -> Double { read(RUSAGE_SELF.rawValue) }
    static func children() -> Double { read(RUSAGE_CHILDREN.rawValue) }
    private static func read(_ who: Int32) -> Double {
        var u = rusage()
        getrusage(who, &u)
        let t = u.ru_utime, s = u.ru_stime
        return Double(t.tv_sec + s.tv_sec) + Double(t.tv_usec + s.tv_usec) / 1e6
    }
}
