import Foundation
import Tandem

/// The backends the framework adapters are tried on: LocMem always, Redis and memcached when the test
/// command started them (it always does; a bare `swift test` skips them).
public enum AdapterBackends {
    /// `locmem`, and `redis` / `memcached` where their servers run.
    public static var all: [String] {
        var out = ["locmem"]
        if TestServers.shouldRun(TestServers.redisURL != nil) { out.append("redis") }
        if TestServers.shouldRun(!TestServers.memcachedServers.isEmpty) { out.append("memcached") }
        return out
    }

    /// A fresh cache on `backend`, under a key prefix of its own (`Tandem.Cache`: the spelling a file
    /// that imports Vapor uses for Tandem's cache). `redisDB` keeps the adapters' Redis keys apart.
    public static func cache(_ backend: String, redisDB: Int) throws -> Tandem.Cache {
        var s: CacheSettings
        switch backend {
        case "redis": s = CacheSettings(backend: "redis", location: [try TestServers.need(TestServers.redisURL, "redis") + "/\(redisDB)"])
        case "memcached": s = CacheSettings(backend: "memcached", location: TestServers.memcachedServers)
        default: s = CacheSettings(backend: "locmem", location: ["adapter-\(UUID())"])
        }
        s.keyPrefix = "ad-\(UUID().uuidString.prefix(8))"
        return try Caches(settings: ["default": s]).default
    }
}
