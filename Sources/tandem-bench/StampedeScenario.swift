import ArgumentParser
import Foundation
import Synchronization
import Tandem

/// `stampede`: 1,000 concurrent `getOrSet` callers of one cold key whose producer takes 50 ms. The
/// reference is the floor, one producer run (50 ms); Tandem's figure is the wall time from the first
/// call to the last answer, best of the rounds, and `producer_runs` the most runs any round saw.
/// Bar: 1 run, wall <= 1.5x the floor.
struct StampedeScenario {
    let rounds: Int
    let callers = 1000
    let producerTime: Duration = .milliseconds(50)

    func run() async throws -> BenchResult {
        let caches = try Caches(settings: ["default": CacheSettings(backend: "locmem", location: ["stampede-\(UUID())"])])
        let cache = caches.default
        let clock = ContinuousClock()
        var best = Duration.seconds(3600)
        var mostRuns = 0
        for round in 0..<rounds {
            let runs = RunCounter()
            let key = "cold-\(round)"
            let start = clock.now
            try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<callers {
                    group.addTask {
                        try await cache.async.getOrSet(key) { () async throws -> Int in
                            runs.bump()
                            try await Task.sleep(for: producerTime)
                            return 42
                        }
                    }
                }
                for try await v in group where v != 42 { throw ValidationError("a caller got \(v)") }
            }
            best = min(best, clock.now - start)
            mostRuns = max(mostRuns, runs.value)
        }
        let seconds = { (d: Duration) in Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
        let floor = seconds(producerTime)
        let wall = seconds(best)
        return BenchResult(scenario: "stampede", reference: floor, tandem: wall, unit: "s", ratio: wall / floor,
                           better: "lower", producerRuns: mostRuns)
    }
}

/// Counts producer runs across tasks.
final class RunCounter: Sendable {
    private let count = Atomic<Int>(0)
    func bump() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}
