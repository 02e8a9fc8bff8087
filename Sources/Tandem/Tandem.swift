// What an application names: the caches and their settings, the loops and bridges, the upstream
// client, and swift-http-types' methods and fields. The backends' modules (Redis, memcached) have
// nothing public beyond their SPI; an app reaches them through settings.
@_exported import HTTPTypes
@_exported import TandemCache
@_exported import TandemLoop
@_exported import TandemHTTP

import Foundation
@_spi(Backend) import TandemMemcached
@_spi(Backend) import TandemRedis
@_spi(Backend) import TandemCache

extension BackendRegistry {
    /// Every backend Tandem ships, by short name and Django's dotted names.
    public static var standard: BackendRegistry {
        var r = BackendRegistry.builtin
        r.register(RedisBackend.registryEntry)
        r.register(MemcachedBackend.registryEntry)
        return r
    }
}

extension Caches {
    /// Builds every cache in `settings` with Tandem's standard backends. No settings: `default` is LocMem.
    /// Redis and memcached run on `loop` when given, else on `loopGroup`'s loops (default:
    /// `EventLoops.group`, a loop per core).
    public convenience init(settings: [String: CacheSettings] = [:], loop: (any TandemEventLoop)? = nil, loopGroup: TandemEventLoopGroup? = nil) throws {
        try self.init(settings: settings, loop: loop, loopGroup: loopGroup, registry: .standard)
    }

    /// Builds the registry from JSON in Django's `CACHES` shape with the standard backends.
    public convenience init(json: Data, loop: (any TandemEventLoop)? = nil, loopGroup: TandemEventLoopGroup? = nil) throws {
        try self.init(json: json, loop: loop, loopGroup: loopGroup, registry: .standard)
    }

    /// Builds the registry from `TANDEM_CACHES` or `TANDEM_CACHE_URL` with the standard backends.
    public static func fromEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment, loop: (any TandemEventLoop)? = nil,
        loopGroup: TandemEventLoopGroup? = nil
    ) throws -> Caches {
        try fromEnvironment(environment, loop: loop, loopGroup: loopGroup, registry: .standard)
    }
}
