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
        print("Tandem demo: a product view on cache '\(cache.alias)' (\(cache.backend.backendDescription))")
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
