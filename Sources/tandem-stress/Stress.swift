import ArgumentParser
import Foundation
import Synchronization
import Tandem

/// A bounded workload over every part of Tandem, including failures and cancellations, that ends by
/// closing everything it opened: run under valgrind (`Integration/faults/leaks.sh`) it shows whether
/// Tandem's code loses memory.
@main
struct Stress: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tandem-stress",
        abstract: "Exercise caches and the HTTP client (successes, errors, cancellations), then close everything.")

    @Option(help: "Redis URL (redis://127.0.0.1:PORT).") var redis: String
    @Option(help: "memcached servers, comma-separated host:port.") var memcached: String
    @Option(help: "Base URL of the HTTP upstream (Integration/upstream.py).") var upstream: String
    @Option(help: "Rounds of the workload.") var rounds: Int = 50
    @Flag(help: .hidden) var leakOnPurpose = false

    func run() async throws {
        let failures = Failures()
        let expect = failures.expect
        do {
            let caches = try Caches(settings: [
                "default": CacheSettings(backend: "redis", location: [redis], options: ["COMMAND_TIMEOUT": 5]),
                "memcached": CacheSettings(backend: "memcached", location: memcached.split(separator: ",").map(String.init),
                                           options: ["POLL_TIMEOUT": 5]),
                "locmem": CacheSettings(backend: "locmem", location: ["stress"], options: ["MAX_ENTRIES": 50]),
                "dummy": CacheSettings(backend: "dummy"),
            ])
            var config = UpstreamClientConfiguration()
            config.requestTimeout = .seconds(5)
            config.maxBodyBytes = 64 * 1024
            let http = UpstreamClient(configuration: config)
            for round in 0..<rounds {
                for alias in ["default", "memcached", "locmem", "dummy"] {
                    let c = try caches[alias]
                    let stores = alias != "dummy"
                    // Async face.
                    try await c.async.set("s\(round)", "value \(round)")
                    expect(try await c.async.get("s\(round)") == (stores ? "value \(round)" : nil), "\(alias) async get")
                    try await c.async.set("n", 1)
                    _ = try? await c.async.incr("n", by: 2)
                    _ = try? await c.async.incr("missing-\(round)")  // a typed error
                    _ = try await c.async.setMany(["a": [UInt8](repeating: 1, count: 3000), "b": [UInt8]([2])])
                    let many: [String: [UInt8]] = try await c.async.getMany(["a", "b", "nope"])
                    expect(many.count == (stores ? 2 : 0), "\(alias) getMany")
                    _ = try await c.async.getOrSet("gos\(round % 3)") { "made" }
                    _ = try await c.async.delete("a")
                    _ = try? await c.async.set("bad key \(round)", "x")  // refused by memcached, warned elsewhere
                    // Blocking face, from a plain thread as blocking code would call it.
                    try await onThread {
                        try c.set("b\(round)", round)
                        expect(try c.get("b\(round)") == (stores ? round : nil), "\(alias) blocking get")
                        _ = try c.touch("b\(round)", timeout: .seconds(60))
                        _ = try? c.incr("missing")
                        try c.deleteMany(["b\(round)", "x"])
                    }
                    // Cancelled calls: some finish, some are cancelled in flight.
                    let tasks = (0..<20).map { i in Task { _ = try await c.async.get("s\(i)") as String? } }
                    for t in tasks where round % 2 == 0 { t.cancel() }
                    for t in tasks { _ = await t.result }
                }
                // Too large for memcached: a typed error.
                _ = try? await caches["memcached"].async.set("big", [UInt8](repeating: 0, count: 2 << 20))
                // HTTP: success, typed errors, fan-out with a deadline, cancellations.
                expect(try await http.async.get(upstream + "/bytes/100").body.count == 100, "http get")
                _ = try? await http.async.get(upstream + "/garbage")
                _ = try? await http.async.get(upstream + "/close")
                _ = try? await http.async.get(upstream + "/bytes/100000")  // over maxBodyBytes
                _ = try? await http.async.get("http://127.0.0.1:1/refused")
                _ = try? await http.async.send(UpstreamRequest(.post, upstream + "/echo", headers: [HTTPField.Name("X-A")!: "b"], body: Array("hello".utf8)))
                let results = await http.async.fanOut(
                    [UpstreamRequest(.get, upstream + "/delay/5"), UpstreamRequest(.get, upstream + "/delay/2000")],
                    deadline: .milliseconds(100))
                expect(results.count == 2, "fan-out results")
                let pending = Task { _ = try await http.async.get(upstream + "/delay/3000") }
                try await Task.sleep(for: .milliseconds(5))
                pending.cancel()
                _ = await pending.result
                if round % 10 == 0 { print("round \(round) done") }
            }
            let counts = try await http.handleCounts()
            expect(counts.active == 0, "no HTTP transfer left (\(counts.active))")
            await http.shutdown()
            for alias in ["default", "memcached", "locmem", "dummy"] { try caches[alias].close() }
        }
        // Let the loop finish the close work it was handed.
        try await Task.sleep(for: .milliseconds(300))
        let created = LoopPromiseStats.created
        let resumed = LoopPromiseStats.resumed
        print("continuations created \(created), resumed \(resumed)")
        expect(created == resumed, "continuations: \(created) created, \(resumed) resumed")
        if leakOnPurpose { plantLeak() }
        let failed = failures.all
        if !failed.isEmpty {
            print("FAILED: \(failed.prefix(10))")
            throw ExitCode(1)
        }
        print("tandem-stress: \(rounds) rounds done")
    }
}

/// Loses 4 KiB on purpose: the test command checks that the leak checker reports it.
@inline(never)
func plantLeak() {
    guard let p = malloc(4096) else { return }
    memset(p, 0x5a, 4096)
    print("planted a 4096-byte leak")
}

/// What went wrong, collected from any thread.
final class Failures: Sendable {
    private let list = Mutex<[String]>([])
    var all: [String] { list.locked { $0 } }
    @Sendable func expect(_ ok: Bool, _ what: String) { if !ok { list.locked { $0.append(what) } } }
}

/// Runs blocking work on a new plain thread and waits for it without blocking the caller's thread.
func onThread(_ body: @escaping @Sendable () throws -> Void) async throws {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
        let t = Thread { c.resume(with: Result { try body() }) }
        t.start()
    }
}
