#if VaporAdapter
import Foundation
import Tandem
import TandemNIO
import Vapor

/// Vapor's `Cache` on any Tandem cache: `app.caches.use(.tandem(caches["default"]))`, then `app.cache` and
/// `req.cache` read and write Redis, memcached or LocMem through Tandem's async face (no thread blocks).
///
/// Values are stored as JSON bytes. `set(_:to:expiresIn:)` honours the expiry (none: kept until
/// evicted, as Vapor's memory cache does); `set(key, to: nil)` deletes the key, as Vapor's contract says.
/// A file that imports both Vapor and Tandem names Tandem's cache `Tandem.Cache`.
public struct TandemVaporCache: Vapor.Cache, Sendable {
    /// The Tandem cache behind it.
    public let cache: Tandem.Cache
    /// Where futures complete (the request's loop for `req.cache`).
    public let eventLoop: any EventLoop

    /// A Vapor cache over `cache` whose futures complete on `eventLoop`.
    public init(cache: Tandem.Cache, eventLoop: any EventLoop) {
        self.cache = cache
        self.eventLoop = eventLoop
        NIOLoopGuard.install()
    }

    public func get<T: Decodable>(_ key: String, as type: T.Type) -> EventLoopFuture<T?> {
        let cache = self.cache
        let promise = eventLoop.makePromise(of: [UInt8]?.self)
        promise.completeWithTask { try await cache.async.get(key) as [UInt8]? }
        return promise.futureResult.flatMapThrowing(JSONDecoding<T>().decode)
    }

    public func set<T: Encodable>(_ key: String, to value: T?) -> EventLoopFuture<Void> {
        set(key, to: value, expiresIn: nil)
    }

    public func set<T: Encodable>(_ key: String, to value: T?, expiresIn expirationTime: CacheExpirationTime?) -> EventLoopFuture<Void> {
        let cache = self.cache
        let encoded: [UInt8]?
        do {
            encoded = try value.map { Array(try JSONEncoder().encode($0)) }
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        let timeout: CacheTimeout = expirationTime.map { .seconds(Double($0.seconds)) } ?? .never
        let promise = eventLoop.makePromise(of: Void.self)
        promise.completeWithTask {
            if let encoded {
                try await cache.async.set(key, encoded, timeout: timeout)
            } else {
                try await cache.async.delete(key)
            }
        }
        return promise.futureResult
    }

    public func `for`(_ request: Request) -> TandemVaporCache {
        TandemVaporCache(cache: cache, eventLoop: request.eventLoop)
    }
}

/// Decodes stored JSON bytes as `T`, passed to NIO's `@Sendable` callbacks as a method: a closure that
/// names a generic `T` would capture its metatype, which is not `Sendable` (a compiler warning).
private struct JSONDecoding<T: Decodable>: @unchecked Sendable {
    // Why @unchecked Sendable is safe: the struct stores nothing; it only carries the type to decode into.
    func decode(_ bytes: [UInt8]?) throws -> T? {
        try bytes.map { try JSONDecoder().decode(T.self, from: Data($0)) }
    }
}

extension Application.Caches.Provider {
    /// Vapor's cache on a Tandem cache: `app.caches.use(.tandem(caches.default))`.
    public static func tandem(_ cache: Tandem.Cache) -> Self {
        .init { app in
            app.caches.use { app in TandemVaporCache(cache: cache, eventLoop: app.eventLoopGroup.next()) }
        }
    }
}
#endif
