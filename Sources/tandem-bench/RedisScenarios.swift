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

    /// 64 tasks doing async GETs, against `redis-benchmark -c 64 -P 1 -t get` on the same server.
    func asyncGet(tasks: Int = 64, onLoop: Bool = false) async throws -> BenchResult {
        let cache = try cache()
        // redis-benchmark's GET reads the key "key:__rand_int__" (a 3-byte value after its SET test);
        // Tandem reads a 3-byte value too.
        try await cache.async.set("bench", "xxx", timeout: .never)
        let (host, port) = hostPort
        var ref: [Double] = []
        var tan: [Double] = []
        let n = max(50_000, Int(seconds * 80_000))
        for _ in 0..<rounds {
            let csv = try runTool("/usr/bin/redis-benchmark", ["-h", host, "-p", String(port), "-c", String(tasks), "-P", "1",
                                                               "-t", "get", "-n", String(n), "--csv"])
            // "GET","84033.61",...
            let line = csv.split(separator: "\n").first { $0.hasPrefix("\"GET\"") } ?? ""
            let fields = line.split(separator: ",").map { $0.replacingOccurrences(of: "\"", with: "") }
            guard fields.count > 1, let rps = Double(fields[1]) else { throw BenchError("cannot parse redis-benchmark output: \(csv)") }
            ref.append(rps)
            tan.append(try await asyncThroughput(tasks: tasks, seconds: seconds, executor: onLoop ? EventLoops.shared : nil) {
                let v: [UInt8]? = try await cache.async.get("bench")
                if v?.count != 3 { throw BenchError("wrong value") }
            })
        }
        let r = ref.max() ?? 0
        let t = tan.max() ?? 0
        return BenchResult(scenario: onLoop ? "redis-async-get-tasks-on-loop" : "redis-async-get", reference: r, tandem: t, unit: "ops/s", ratio: t / r, better: "higher")
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
