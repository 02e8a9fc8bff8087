import Foundation
import InMemoryTracing
import Tandem
import TandemTestSupport
import Testing
import Tracing

/// Spans of cache operations and upstream calls, recorded by an in-memory tracer given in settings.
@Suite struct TracingTests {
    @Test func cacheOperationsAreSpansWithAliasOperationAndHit() async throws {
        let tracer = InMemoryTracer()
        var settings = CacheSettings(backend: "locmem", location: ["tracing-\(UUID())"])
        settings.tracer = tracer
        let cache = try Caches(settings: ["default": settings]).default
        _ = try await cache.async.get("k") as String?
        try await cache.async.set("k", "v")
        _ = try await onPlainThread { try cache.get("k") as String? }
        let spans = tracer.finishedSpans
        #expect(spans.map(\.operationName) == ["cache.get", "cache.set", "cache.get"])
        #expect(spans.allSatisfy { $0.kind == .client && $0.attributes["cache.alias"]?.toSpanAttribute() == "default" })
        #expect(spans[0].attributes["cache.hit"]?.toSpanAttribute() == false)
        #expect(spans[2].attributes["cache.hit"]?.toSpanAttribute() == true)
        #expect(spans[1].attributes["cache.operation"]?.toSpanAttribute() == "set")
        // A cache without a tracer (and none bootstrapped) records nothing anywhere.
        let untraced = try Caches(settings: ["default": CacheSettings(backend: "locmem", location: ["untraced-\(UUID())"])]).default
        _ = try await untraced.async.get("k") as String?
        #expect(tracer.finishedSpans.count == 3)
    }

    /// Issue 32: on a Redis cache with a near cache, a traced `get` that hit says whether the near
    /// cache answered (`tandem.cache.near_hit`): false for the read that went to the server, true for
    /// one served from process memory; a miss has no such attribute.
    @Test(.timeLimit(.minutes(3)), .enabled(if: TestServers.shouldRun(TestServers.redisURL != nil), Comment(rawValue: TestServers.skipMessage)),
          arguments: FaceKind.allCases)
    func aGetTheNearCacheAnsweredSaysSoOnItsSpan(_ face: FaceKind) async throws {
        let tracer = InMemoryTracer()
        let cache = try RedisFixture(loop: .epoll).makeCache {
            $0.tracer = tracer
            $0.options["NEAR_CACHE"] = true
        }
        defer { cache.close() }
        let key = "near-traced-\(UUID().uuidString.prefix(8))"
        func get(_ k: String) async throws -> String? {
            switch face {
            case .async: try await cache.async.get(k)
            case .blocking: try await onPlainThread { try cache.get(k) }
            }
        }
        func lastNearHit() -> SpanAttribute? { tracer.finishedSpans.last?.attributes["tandem.cache.near_hit"]?.toSpanAttribute() }
        #expect(try await get(key) == nil)
        #expect(tracer.finishedSpans.last?.attributes["cache.hit"]?.toSpanAttribute() == false)
        #expect(lastNearHit() == nil, "a miss says nothing of the near cache")
        try await cache.async.set(key, "v")
        #expect(try await get(key) == "v")
        #expect(lastNearHit() == false, "the read after this process's own write goes to the server")
        // Once tracking is on, what that read kept answers the next one from memory.
        let servedNear = try await eventuallyAsync(30) { (try? await get(key)) == "v" && lastNearHit() == true }
        #expect(servedNear, "a later read was answered by the near cache")
        #expect(tracer.finishedSpans.last?.attributes["cache.hit"]?.toSpanAttribute() == true)
    }

    @Test(.timeLimit(.minutes(3)), .enabled(if: TestServers.shouldRun(TestServers.httpUpstream != nil),
                                           Comment(rawValue: TestServers.skipMessage)))
    func upstreamCallsAreSpansWithStatusAttemptsAndTimings() async throws {
        let base = try TestServers.need(TestServers.httpUpstream, "HTTP upstream")
        let tracer = InMemoryTracer()
        var config = UpstreamClientConfiguration()
        config.tracer = tracer
        let http = UpstreamClient(configuration: config)
        defer { Task { await http.shutdown() } }
        let id = UUID().uuidString.prefix(8)
        // Credentials in the URL never reach the span.
        let withUser = base.replacingOccurrences(of: "http://", with: "http://user:s3cret@")
        let r = try await http.async.send(UpstreamRequest(.get, withUser + "/flaky/1?id=\(id)"),
                                          retry: RetryPolicy(maxAttempts: 3, initialBackoff: .milliseconds(1)))
        #expect(r.status == 200)
        let span = try #require(tracer.finishedSpans.last)
        #expect(span.operationName == "HTTP GET" && span.kind == .client)
        #expect(span.attributes["http.response.status_code"]?.toSpanAttribute() == 200)
        #expect(span.attributes["tandem.http.attempts"]?.toSpanAttribute() == 2)
        guard case .string(let url)? = span.attributes["url.full"]?.toSpanAttribute() else {
            Issue.record("no url.full string attribute")
            return
        }
        #expect(!url.contains("s3cret") && !url.contains("user@") && url.contains("/flaky/1"))
        #expect(span.attributes["tandem.http.total_ms"] != nil && span.attributes["tandem.http.connect_ms"] != nil)
        // A failure is recorded on its span.
        _ = try? await http.async.get("http://127.0.0.1:\(try freeLoopbackPort())/x")
        #expect(tracer.finishedSpans.last?.errors.isEmpty == false)
    }
}
