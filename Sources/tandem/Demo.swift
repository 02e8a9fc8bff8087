import ArgumentParser
import Foundation
import Tandem

/// A small "view": renders a product page whose expensive part (a slow query, simulated by a
/// fixed amount of work) is cached.
struct ProductPage: Codable, Sendable {
    var id: Int
    var title: String
    var priceCents: Int
    var related: [Int]
}

/// Stands for a slow database query: about `milliseconds` of waiting.
func slowQuery(_ id: Int, milliseconds: Int) -> ProductPage {
    Thread.sleep(forTimeInterval: Double(milliseconds) / 1000)
    return ProductPage(id: id, title: "Product \(id)", priceCents: 1000 + id * 7, related: [id + 1, id + 2, id + 3])
}

func milliseconds(_ d: Duration) -> String {
    let ms = Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
    return String(format: "%9.3f ms", ms)
}

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a small view against the embedded LocMem default and print what it did.")

    @Option(help: "Products rendered per pass.")
    var products: Int = 20

    @Option(help: "Cost of the simulated slow query, in milliseconds.")
    var queryMs: Int = 5

    @Option(help: "Base URL of an HTTP upstream (used by the fan-out part when available).")
    var upstream: String?

    func run() async throws {
        let caches = try Caches()   // no settings: "default" is the embedded LocMem cache
        let cache = caches.default
        try await cache.async.clear()
        let clock = ContinuousClock()
        print("Tandem demo: a product view on cache '\(cache.alias)' (\(cache.backendDescription))")
        print("each view runs a \(queryMs) ms query on a miss; \(products) products per pass\n")

        // Blocking face, from a plain thread as a blocking server would call it.
        let (blockingCold, blockingWarm) = try await onThread {
            var cold = Duration.zero
            var warm = Duration.zero
            for pass in 0..<2 {
                let t = try clock.measure {
                    for id in 0..<products {
                        let page: ProductPage = try cache.getOrSet("product:\(id)", timeout: .seconds(60)) {
                            slowQuery(id, milliseconds: queryMs)
                        }
                        precondition(page.id == id)
                    }
                }
                if pass == 0 { cold = t } else { warm = t }
            }
            return (cold, warm)
        }
        try await cache.async.clear()

        // Async face: the same view, written with await.
        var asyncCold = Duration.zero
        var asyncWarm = Duration.zero
        for pass in 0..<2 {
            let start = clock.now
            for id in 0..<products {
                let page: ProductPage = try await cache.async.getOrSet("product:\(id)", timeout: .seconds(60)) {
                    slowQuery(id, milliseconds: queryMs)
                }
                precondition(page.id == id)
            }
            if pass == 0 { asyncCold = clock.now - start } else { asyncWarm = clock.now - start }
        }

        print("face        cold (misses)   warm (hits)    speed-up")
        for (name, cold, warm) in [("blocking", blockingCold, blockingWarm), ("async", asyncCold, asyncWarm)] {
            let speedup = cold / warm
            print("\(name.padding(toLength: 10, withPad: " ", startingAt: 0))  \(milliseconds(cold))   \(milliseconds(warm))   \(String(format: "%8.0fx", speedup))")
        }
        let counter = try await countViews(cache)
        print("\nincr on the async face counted \(counter) views atomically (8 tasks x 25).")

        if let upstream {
            try await upstreamDemo(base: upstream, cache: cache)
        } else {
            print("\n(no --upstream given: skipping the fan-out part; Integration/demo.sh starts a local upstream)")
        }
    }

    /// A dashboard view that needs five upstream services: one after another, then fanned out, then
    /// fanned out with the answers cached.
    func upstreamDemo(base: String, cache: Cache) async throws {
        let services = [("users", 40), ("orders", 60), ("recommendations", 80), ("inventory", 50), ("reviews", 30)]
        let requests = services.map { UpstreamRequest(.get, "\(base)/delay/\($0.1)?service=\($0.0)") }
        let http = UpstreamClient()
        let clock = ContinuousClock()
        print("\nA dashboard view calls five upstream services (\(services.map { "\($0.0) \($0.1) ms" }.joined(separator: ", "))):")

        let sequential = try await clock.measure {
            for r in requests { _ = try await http.async.send(r) }
        }
        let fanned = await clock.measure {
            let results = await http.async.fanOut(requests, deadline: .seconds(2))
            precondition(results.allSatisfy { (try? $0.get())?.status == 200 }, "fan-out failed")
        }
        try await cache.async.deleteMany(services.map { "upstream:\($0.0)" })
        // Cold: fan out and store each answer; warm: every answer comes from the cache.
        func cachedView() async throws {
            _ = await fanOut(deadline: .seconds(2), zip(services, requests).map { service, request in
                { () async throws -> [UInt8] in
                    try await cache.async.getOrSet("upstream:\(service.0)", timeout: .seconds(60)) {
                        try await http.async.send(request).body
                    }
                }
            })
        }
        try await cachedView()
        let warm = try await clock.measure { try await cachedView() }

        print("  one after another     \(milliseconds(sequential))")
        print("  fan-out               \(milliseconds(fanned))   (\(String(format: "%.1f", sequential / fanned))x faster: the slowest call, not the sum)")
        print("  fan-out + warm cache  \(milliseconds(warm))")
        await http.shutdown()
    }

    func countViews(_ cache: Cache) async throws -> Int {
        try await cache.async.set("demo:views", 0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<8 { group.addTask { for _ in 0..<25 { try await cache.async.incr("demo:views") } } }
            try await group.waitForAll()
        }
        return try await cache.async.get("demo:views") ?? -1
    }
}

/// Runs blocking work on a plain thread and waits for it without blocking the caller's task.
func onThread<R: Sendable>(_ body: @escaping @Sendable () throws -> R) async throws -> R {
    try await withCheckedThrowingContinuation { cont in
        Thread { cont.resume(with: Result { try body() }) }.start()
    }
}
