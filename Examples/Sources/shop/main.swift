import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import Metrics
import Shop
import Tandem

// The example shop: caches from TANDEM_CACHES (or TANDEM_CACHE_URL; none: LocMem), the dashboard's
// services from SHOP_UPSTREAM, the port from SHOP_PORT (default 8080). Stops on SIGTERM or SIGINT.
let env = ProcessInfo.processInfo.environment
var logger = Logger(label: "shop")
if let raw = env["SHOP_LOG_LEVEL"] {
    guard let level = Logger.Level(rawValue: raw) else {
        logger.critical("SHOP_LOG_LEVEL=\(raw.debugDescription): one of \(Logger.Level.allCases.map(\.rawValue))")
        exit(2)
    }
    logger.logLevel = level
}
guard let port = Int(env["SHOP_PORT"] ?? "8080"), (1...65535).contains(port) else {
    logger.critical("SHOP_PORT must be a port number")
    exit(2)
}
// Everything Tandem measures goes to the shop's Prometheus registry, served on /metrics; the
// factory is bootstrapped before any cache, client or loop is made.
let metrics = ShopMetrics()
MetricsSystem.bootstrap(metrics.factory)
do {
    // The views use three caches. With no settings at all, each is a LocMem of its own.
    let caches = env["TANDEM_CACHES"] != nil || env["TANDEM_CACHE_URL"] != nil
        ? try Caches.fromEnvironment()
        : try Caches(settings: [
            "default": CacheSettings(backend: "locmem", location: ["shop-default"]),
            "sessions": CacheSettings(backend: "locmem", location: ["shop-sessions"]),
            "pages": CacheSettings(backend: "locmem", location: ["shop-pages"]),
        ])
    let missing = ["default", "sessions", "pages"].filter { !caches.aliases.contains($0) }
    guard missing.isEmpty else {
        logger.critical("the cache settings must name default, sessions and pages; missing: \(missing)")
        exit(2)
    }
    let shop = Shop(caches: caches, http: UpstreamClient(), ahc: HTTPClient(eventLoopGroupProvider: .singleton),
                    configuration: try ShopConfiguration.fromEnvironment(), metrics: metrics)
    logger.info("shop listening", metadata: ["port": "\(port)", "caches": "\(caches.aliases)"])
    try await shop.application(port: port, logger: logger).runService()
} catch {
    logger.critical("shop failed: \(error)")
    exit(1)
}
