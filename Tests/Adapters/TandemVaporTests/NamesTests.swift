#if VaporAdapter && HummingbirdAdapter
import AsyncHTTPClient
import Hummingbird
import NIOCore
import Tandem
@_spi(Backend) import TandemCache
@_spi(Backend) import TandemMemcached
@_spi(Backend) import TandemRedis
import TandemHummingbird
import Testing
import Vapor

/// A file that imports Tandem next to NIO, swift-http-types, Hummingbird, Vapor and async-http-client
/// names every public Tandem type unqualified (this file does not compile otherwise); the one shared
/// name, `Cache`, is written `Tandem.Cache`. It also names the others' types unqualified where they
/// are not ambiguous between those libraries themselves.
@Suite struct PublicNamesLiveNextToNIO {
    @Test func everyPublicTandemTypeIsNamedUnqualified() throws {
        let tandemTypes: [Any.Type] = [
            Tandem.Cache.self, Caches.self, AsyncCache.self, CacheSettings.self, CacheError.self, CacheTimeout.self,
            CacheExpiry.self, CacheResilience.self, CacheBackend.self, NonBlockingCacheBackend.self, BackendRegistry.self,
            LocMemBackend.self, DummyBackend.self, RedisBackend.self, MemcachedBackend.self, StampedeLock.self,
            SettingValue.self, StoredValue.self, ValueKind.self, JSONCacheCodec.self, KeyStrictness.self, SetMode.self, TLSFailure.self,
            UpstreamClient.self, AsyncUpstreamClient.self, UpstreamRequest.self, UpstreamResponse.self, UpstreamError.self,
            UpstreamClientConfiguration.self, RetryPolicy.self, RetryThrottle.self, HedgingPolicy.self, ResponseCaching.self,
            (any TandemEventLoop).self, EpollEventLoop.self, DispatchEventLoop.self, EventLoops.self, IOEvents.self,
            AsyncSafety.self, AsyncUnsafePolicy.self, Bridge.self, TandemError.self, DeadlineExceeded.self,
            TandemPersistDriver.self, PageCache.self, ServerErrorStatus.self, CacheError.Code.self, UpstreamError.Code.self,
        ]
        // Theirs, unqualified, in the same file.
        let theirTypes: [Any.Type] = [
            (any EventLoop).self, HTTPClient.self, AsyncHTTPClient.HTTPClient.self, HTTPRequest.self, HTTPResponse.self,
            HTTPMethod.self, HTTPError.self, HTTPFields.self, Router<BasicRequestContext>.self, ByteBuffer.self,
        ]
        #expect(Set(tandemTypes.map { String(reflecting: $0) }).count == tandemTypes.count)
        #expect(!theirTypes.map { String(reflecting: $0) }.contains { $0.hasPrefix("Tandem") }, "\(theirTypes)")
        // A request as the README writes it, in a file that imports Hummingbird and Vapor.
        let request = UpstreamRequest(.get, "http://users/1", headers: [.accept: "application/json"])
        #expect(request.method == .get && request.headers[.accept] == "application/json")
    }
}
#endif
