import Foundation
import Synchronization
import Tandem

/// `inflight-10k`: 10,000 async Redis GETs (10,000 tasks, each getting again as soon as its GET is
/// answered) and 1,000 HTTP requests to the upstream's `/delay/200` (1,000 tasks, 1,000 connections)
/// in flight at once for `seconds`, while a sampler reads this process's thread count and resident
/// memory every 10 ms. The line reports the peak thread count (`threads`, against the bar of cores + 4
/// as the reference) and the peak growth of resident memory over the warmed-up process
/// (`rss_growth_mb`).
struct InflightScenario {
    let redis: String
    let upstream: String
    let seconds: Double

    func run() async throws -> BenchResult {
        let cache = try Caches(settings: ["default": CacheSettings(backend: "redis", location: [redis])]).default
        try await cache.async.set("inflight", "xxx", timeout: .never)
        var config = UpstreamClientConfiguration()
        config.maxConnectionsPerHost = 1000
        config.requestTimeout = .seconds(30)
        let http = UpstreamClient(configuration: config)
        // Warm up both paths, so that the baseline holds what a running service already has.
        _ = try await http.async.get(upstream + "/delay/1")
        _ = try await cache.async.get("inflight") as String?
        let baselineRSS = residentMegabytes()
        let baselineThreads = processThreadCount()
        let stop = StopFlag()
        let peaks = Peaks(threads: baselineThreads, rss: baselineRSS)
        let gets = Counter()
        let requests = Counter()
        let failures = Counter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                while !stop.value.load(ordering: .relaxed) {
                    let t = processThreadCount()
                    let rss = residentMegabytes()
                    peaks.values.locked { $0 = (max($0.0, t), max($0.1, rss)) }
                    try? await Task.sleep(for: .milliseconds(10))
                }
            }
            for _ in 0..<10_000 {
                group.addTask {
                    while !stop.value.load(ordering: .relaxed) {
                        let v: [UInt8]? = try await cache.async.get("inflight")
                        if v?.count != 3 { throw BenchError("wrong value") }
                        _ = gets.next()
                    }
                }
            }
            for _ in 0..<1000 {
                group.addTask {
                    while !stop.value.load(ordering: .relaxed) {
                        do {
                            let r = try await http.async.get(upstream + "/delay/200")
                            if r.status != 200 { _ = failures.next() }
                        } catch {
                            _ = failures.next()
                        }
                        _ = requests.next()
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            stop.value.store(true, ordering: .relaxed)
            try await group.waitForAll()
        }
        await http.shutdown()
        let (threads, peakRSS) = peaks.values.locked { $0 }
        let growth = peakRSS - baselineRSS
        let cores = ProcessInfo.processInfo.activeProcessorCount
        FileHandle.standardError.write(Data(String(format: "inflight-10k: %d GETs and %d HTTP requests (%d failed) in %.0f s; threads %d at rest, %d at the peak (%d cores); RSS %.1f MB at rest, +%.1f MB at the peak\n",
                                                   gets.next(), requests.next(), failures.next(), seconds, baselineThreads, threads, cores, baselineRSS, growth).utf8))
        var result = BenchResult(scenario: "inflight-10k", reference: Double(cores + 4), tandem: Double(threads), unit: "threads", ratio: Double(threads) / Double(cores + 4), better: "lower")
        result.threads = threads
        result.rssGrowthMB = (growth * 10).rounded() / 10
        return result
    }
}

/// This process's resident memory in megabytes (`VmRSS` of `/proc/self/status`).
func residentMegabytes() -> Double {
    guard let data = try? FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/self/status")).readToEnd() else { return 0 }
    for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let kb = line.split(separator: " ").compactMap { Double($0) }.first ?? 0
        return kb / 1024
    }
    return 0
}

/// The highest thread count and resident memory seen.
final class Peaks: Sendable {
    let values: Mutex<(Int, Double)>
    init(threads: Int, rss: Double) { values = Mutex((threads, rss)) }
}
