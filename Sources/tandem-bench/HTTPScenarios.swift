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
        let requests = (0..<100).map { _ in UpstreamRequest(.get, upstream + "/delay/50") }
        let clock = ContinuousClock()
        var walls: [Double] = []
        for round in 0..<(rounds + 1) {
            let start = clock.now
            let results = await http.async.fanOut(requests)
            let d = clock.now - start
            guard results.allSatisfy({ (try? $0.get())?.status == 200 }) else { throw BenchError("fan-out had failures") }
            if round > 0 { walls.append(Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18) }  // round 0 opens the connections
        }
        let wall = walls.sorted()[walls.count / 2]
        await http.shutdown()
        return BenchResult(scenario: "http-fanout-delay", reference: 0.050, tandem: wall, unit: "s", ratio: wall / 0.050, better: "lower")
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
            let ownCost = (CPUTime.process() - ownCPU) / (t * seconds)
            tan.append(t)
            tanCPU.append(ownCost * 1e6)
            latencies += samples.microseconds
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
}

/// CPU time (user + system, in seconds) of this process or of its finished children.
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
