import Foundation
import Tandem

/// `loop-group`: the same Redis GET and small-HTTP-GET loads on a loop group of 1 and of 2 loops,
/// rounds alternating, in one run. Each line is N = 2 against N = 1 (`reference`: N = 1), with the
/// client CPU per operation of both, so that what a second loop buys (or costs) is read directly, and
/// the CPU of the loop threads alone per operation (`loop_cpu_us_per_op`): what one loop can carry.
struct LoopGroupScenario {
    let redis: String
    let smallFile: String
    let seconds: Double
    let rounds: Int
    let tasks = 64

    func run() async throws -> [BenchResult] {
        let one = TandemEventLoopGroup(count: 1, name: "bench-n1")
        let two = TandemEventLoopGroup(count: 2, name: "bench-n2")
        defer {
            one.shutdown()
            two.shutdown()
        }
        func redisCache(_ group: TandemEventLoopGroup) throws -> Cache {
            try Caches(settings: ["default": CacheSettings(backend: "redis", location: [redis])], loopGroup: group).default
        }
        func client(_ group: TandemEventLoopGroup) -> UpstreamClient {
            var config = UpstreamClientConfiguration()
            config.maxConnectionsPerHost = tasks
            return UpstreamClient(loopGroup: group, configuration: config)
        }
        let caches = [try redisCache(one), try redisCache(two)]
        let clients = [client(one), client(two)]
        try await caches[0].async.set("bench", "xxx", timeout: .never)
        let http = HTTPScenarios(seconds: seconds, rounds: rounds)
        // Opens every connection before timing.
        for c in clients { _ = try await http.smallGetsRound(c, url: smallFile, concurrency: tasks) }
        var redisRate: [[Double]] = [[], []], redisCPU: [[Double]] = [[], []], redisLoopCPU: [[Double]] = [[], []], httpLoopCPU: [[Double]] = [[], []]
        let prefixes = ["bench-n1-", "bench-n2-"]
        var httpRate: [[Double]] = [[], []], httpCPU: [[Double]] = [[], []], httpLatencies: [[Double]] = [[], []]
        for _ in 0..<max(rounds, 3) {
            for n in 0..<2 {
                var loopBefore = ThreadCPU.seconds(named: prefixes[n])
                let (rate, cpu) = try await tandemGets(caches[n], tasks: tasks, seconds: seconds) { "bench" }
                redisRate[n].append(rate)
                redisCPU[n].append(cpu)
                redisLoopCPU[n].append((ThreadCPU.seconds(named: prefixes[n]) - loopBefore) / (rate * seconds) * 1e6)
                loopBefore = ThreadCPU.seconds(named: prefixes[n])
                let (t, c, l) = try await http.smallGetsRound(clients[n], url: smallFile, concurrency: tasks)
                httpRate[n].append(t)
                httpCPU[n].append(c)
                httpLoopCPU[n].append((ThreadCPU.seconds(named: prefixes[n]) - loopBefore) / (t * seconds) * 1e6)
                httpLatencies[n] += l
            }
            FileHandle.standardError.write(Data(String(format: "loop-group round: redis N=1 %.0f GET/s %.1f us, N=2 %.0f GET/s %.1f us; http N=1 %.0f req/s %.1f us, N=2 %.0f req/s %.1f us\n",
                                                       redisRate[0].last ?? 0, redisCPU[0].last ?? 0, redisRate[1].last ?? 0, redisCPU[1].last ?? 0,
                                                       httpRate[0].last ?? 0, httpCPU[0].last ?? 0, httpRate[1].last ?? 0, httpCPU[1].last ?? 0).utf8))
        }
        for c in clients { await c.shutdown() }
        /// One line: 2 loops (`tandem`) against 1 loop (`reference`), medians of the rounds.
        func line(_ scenario: String, rate: [[Double]], cpu: [[Double]], loopCPU: [[Double]]) -> BenchResult {
            var r = BenchResult(scenario: scenario, reference: median(rate[0]), tandem: median(rate[1]), unit: "ops/s",
                                ratio: median(rate[1]) / max(1, median(rate[0])), better: "higher")
            r.referenceName = "tandem, 1 loop (tandem: 2 loops)"
            r.cpuUsPerOp = median(cpu[1])
            r.referenceCpuUsPerOp = median(cpu[0])
            r.loopCpuUsPerOp = median(loopCPU[1])
            r.referenceLoopCpuUsPerOp = median(loopCPU[0])
            return r
        }
        let redisLine = line("redis-async-get-loops", rate: redisRate, cpu: redisCPU, loopCPU: redisLoopCPU)
        var httpLine = line("http-small-gets-loops", rate: httpRate, cpu: httpCPU, loopCPU: httpLoopCPU)
        httpLine.p50Us = percentile(httpLatencies[1], 0.50)
        httpLine.p99Us = percentile(httpLatencies[1], 0.99)
        httpLine.referenceP50Us = percentile(httpLatencies[0], 0.50)
        httpLine.referenceP99Us = percentile(httpLatencies[0], 0.99)
        return [redisLine, httpLine]
    }
}

/// CPU time of this process's threads by name (`/proc/self/task/*/comm` and `stat`).
enum ThreadCPU {
    /// User + system seconds of the threads whose name starts with `prefix`.
    static func seconds(named prefix: String) -> Double {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        var total = 0.0
        for t in tasks {
            guard let comm = try? String(contentsOfFile: "/proc/self/task/\(t)/comm", encoding: .utf8),
                  comm.hasPrefix(prefix),
                  let stat = try? String(contentsOfFile: "/proc/self/task/\(t)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { continue }
            total += (user + system) / ticks
        }
        return total
    }
}
