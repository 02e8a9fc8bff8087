import Foundation
import MetricsTestKit
import Synchronization
import Tandem
@testable import TandemRedis
import TandemTestSupport
import Testing
@_spi(Backend) import TandemCache
@_spi(Backend) import TandemRedis

private let serversAvailable = TestServers.shouldRun(TestServers.redisURL != nil)

/// Every mode with every face on every loop.
private let everyCombination: [(String, FaceKind, TestLoops.Kind)] = ["tracking", "broadcast"].flatMap { mode in
    FaceKind.allCases.flatMap { face in TestLoops.Kind.allCases.map { (mode, face, $0) } }
}

/// A near-cached Redis cache on the test server and the near cache behind it. Its KEY_PREFIX is its
/// database's number: invalidations name keys without their database, so tests running at once in
/// other databases must not use the same key names (their writes would drop these copies).
private func nearCache(_ mode: String, _ loop: TestLoops.Kind, extra: [String: SettingValue] = [:]) throws -> (NearFixture, Cache, NearCache) {
    var fields: [String: SettingValue] = ["MODE": .string(mode)]
    fields.merge(extra) { _, b in b }
    let fx = NearFixture(redis: RedisFixture(loop: loop, options: ["COMMAND_TIMEOUT": 10, "NEAR_CACHE": .dict(fields)]))
    let cache = try fx.redis.makeCache { $0.keyPrefix = fx.prefix }
    let backend = try #require(cache.backend as? RedisBackend)
    return (fx, cache, try #require(backend.near))
}

/// Reads `key` until the near cache's invalidation connection is subscribed and a repeated read is
/// served from process memory. Tried a few times: a FLUSHDB by any other test on the server (in any
/// database) tells every near cache to drop everything, which may fall between the two reads.
private func warmUp(_ face: Face, _ near: NearCache, _ key: String) async throws {
    _ = try await face.get(key, as: String.self)
    #expect(try await eventually(20) { near.trackingID(server: 0) != nil }, "the invalidation connection subscribed")
    let served = try await eventuallyAsync(20) {
        _ = try? await face.get(key, as: String.self)  // kept now
        let hits = near.statistics.hits
        _ = try? await face.get(key, as: String.self)
        return near.statistics.hits == hits + 1
    }
    #expect(served, "a repeated read is served from process memory")
}

/// Django's cache behaviours with the near cache on (tracking mode on the epoll loop, broadcast on
/// the dispatch loop), in both faces: a near cache must not change what a caller reads.
@Suite(.enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)))
struct RedisNearCacheSemantics {
    @Test("Redis with a near cache", arguments: SemanticSuite.names, [("tracking", TestLoops.Kind.epoll), ("broadcast", .dispatch)])
    func behaviour(_ name: String, _ setup: (String, TestLoops.Kind)) async throws {
        _ = try TestServers.need(TestServers.redisURL, "redis-server")
        for face in FaceKind.allCases {
            let fx = RedisFixture(loop: setup.1, options: ["COMMAND_TIMEOUT": 10, "NEAR_CACHE": .dict(["MODE": .string(setup.0)])])
            try await SemanticSuite.run(name, fixture: fx, face: face)
        }
    }
}

@Suite(.enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)))
struct RedisNearCacheTests {
    @Test(arguments: everyCombination)
    func changesByAnotherClientReachTheNearCache(_ mode: String, _ faceKind: FaceKind, _ loop: TestLoops.Kind) async throws {
        let (fx, cache, near) = try nearCache(mode, loop)
        defer { cache.close() }
        let face = Face(cache, faceKind)
        try await face.set("k", "v1")
        try await warmUp(face, near, "k")
        // The local copy lives 60 s: only an invalidation can make these reads see the change.
        _ = try await fx.raw(["SET", fx.key("k"), "v2"])
        #expect(try await eventuallyAsync(30) { (try? await face.get("k", as: String.self)) == "v2" }, "an overwrite")
        _ = try await face.get("k", as: String.self)
        _ = try await fx.raw(["DEL", fx.key("k")])
        #expect(try await eventuallyAsync(30) { (try? await face.get("k", as: String.self)) == .some(nil) }, "a delete")
        // A key another client creates after this process read it as absent.
        _ = try await fx.raw(["SET", fx.key("k"), "v3"])
        #expect(try await eventuallyAsync(30) { (try? await face.get("k", as: String.self)) == "v3" }, "a key made")
        _ = try await fx.raw(["PEXPIRE", fx.key("k"), "100"])
        #expect(try await eventuallyAsync(30) { (try? await face.get("k", as: String.self)) == .some(nil) }, "an expiry set")
        _ = try await fx.raw(["SET", fx.key("k"), "v4"])
        #expect(try await eventuallyAsync(30) { (try? await face.get("k", as: String.self)) == "v4" })
        let flushes = near.statistics.flushes
        _ = try await fx.raw(["FLUSHDB"])
        #expect(try await eventuallyAsync(30) { (try? await face.get("k", as: String.self)) == .some(nil) }, "a flush")
        // The read above may have gone to the server (the last copy is kept only if no invalidation
        // crossed its read), so the flush's message may still be on its way.
        #expect(try await eventually(10) { near.statistics.flushes > flushes }, "the flush reached the near cache")
    }

    @Test(arguments: everyCombination)
    func thisProcessReadsItsOwnWritesAtOnce(_ mode: String, _ faceKind: FaceKind, _ loop: TestLoops.Kind) async throws {
        let (_, cache, near) = try nearCache(mode, loop)
        defer { cache.close() }
        let face = Face(cache, faceKind)
        try await face.set("n", 1)
        try await warmUp(face, near, "n")
        for i in 2...20 {
            try await face.set("n", i)
            #expect(try await face.get("n", as: Int.self) == i)
        }
        #expect(try await face.incr("n", by: 5) == 25)
        #expect(try await face.get("n", as: Int.self) == 25)
        #expect(try await face.delete("n"))
        #expect(try await face.get("n", as: Int.self) == nil)
        #expect(try await face.hasKey("n") == false)
        #expect(try await face.setMany(["a": 1, "b": 2]).isEmpty)
        #expect(try await face.getMany(["a", "b", "c"], as: Int.self) == ["a": 1, "b": 2])
        #expect(try await face.getMany(["a", "b", "c"], as: Int.self) == ["a": 1, "b": 2], "the same, from process memory")
        try await face.deleteMany(["a"])
        #expect(try await face.getMany(["a", "b"], as: Int.self) == ["b": 2])
    }

    @Test(arguments: everyCombination)
    func racingReadsAndOutsideWritesLeaveNoStaleCopy(_ mode: String, _ faceKind: FaceKind, _ loop: TestLoops.Kind) async throws {
        let (fx, cache, near) = try nearCache(mode, loop)
        defer { cache.close() }
        let face = Face(cache, faceKind)
        let keys = ["r0", "r1", "r2"]
        for k in keys { try await face.set(k, "0") }
        try await warmUp(face, near, "r0")
        let stop = StopFlag()
        // Readers keep every key's reads in flight while another client writes them.
        let readers = (0..<6).map { i in
            Task {
                var reads = 0
                while !stop.raised.load(ordering: .relaxed) {
                    _ = try await face.get(keys[(i + reads) % keys.count], as: String.self)
                    reads += 1
                    await Task.yield()  // a hit does not suspend: leave the test's two threads a turn
                }
                return reads
            }
        }
        let writer = try RawRedis(port: fx.port)
        _ = try writer.command(["SELECT", String(fx.db)])
        // Each round's write is the last one of its key for a while: a read that crossed it and was
        // kept anyway would be read here until its copy expires (60 s), and fail the round.
        var stale: [String] = []
        for round in 1...60 where stale.isEmpty {
            let value = "round-\(round)"
            try await onPlainThread { for k in keys { _ = try writer.command(["SET", fx.key(k), value]) } }
            for k in keys {
                if try await !eventuallyAsync(5, { (try? await face.get(k, as: String.self)) == value }) { stale.append("\(k) after round \(round)") }
            }
        }
        stop.raised.store(true, ordering: .relaxed)
        var reads = 0
        for r in readers { reads += try await r.value }
        #expect(reads > 0)
        #expect(stale.isEmpty, "stale copies: \(stale)")
    }

    @Test(arguments: everyCombination)
    func aKilledInvalidationConnectionDropsEverythingAndComesBack(_ mode: String, _ faceKind: FaceKind, _ loop: TestLoops.Kind) async throws {
        let (fx, cache, near) = try nearCache(mode, loop)
        defer { cache.close() }
        let face = Face(cache, faceKind)
        try await face.set("k", "v1")
        try await warmUp(face, near, "k")
        let id = try #require(near.trackingID(server: 0))
        let flushes = near.statistics.flushes
        _ = try await fx.raw(["CLIENT", "KILL", "ID", String(id)])
        #expect(try await eventually(10) { near.statistics.flushes > flushes }, "losing the invalidation connection dropped the copies")
        _ = try await fx.raw(["SET", fx.key("k"), "v2"])
        #expect(try await face.get("k", as: String.self) == "v2")
        #expect(try await eventually(20) { (near.trackingID(server: 0) ?? id) != id }, "a new invalidation connection subscribed")
        try await warmUp(face, near, "k")
        _ = try await fx.raw(["SET", fx.key("k"), "v3"])
        #expect(try await eventuallyAsync(30) { (try? await face.get("k", as: String.self)) == "v3" }, "invalidations flow again")
    }

    @Test(arguments: FaceKind.allCases, TestLoops.Kind.allCases)
    func aKilledReadingConnectionDropsWhatItTracked(_ faceKind: FaceKind, _ loop: TestLoops.Kind) async throws {
        let (fx, cache, near) = try nearCache("tracking", loop)
        defer { cache.close() }
        let face = Face(cache, faceKind)
        try await face.set("k", "v1")
        try await warmUp(face, near, "k")
        let id = try #require(near.trackingID(server: 0))
        // The connections that read for the near cache redirect their invalidations to `id`.
        let list = String(try await fx.raw(["CLIENT", "LIST"]).dropFirst())  // a bulk reply: "$" first
        let readers = list.split(whereSeparator: \.isNewline).filter { $0.contains(" redir=\(id) ") }.compactMap { line in
            line.split(separator: " ").first { $0.hasPrefix("id=") }.map { String($0.dropFirst(3)) }
        }
        #expect(!readers.isEmpty, "a tracking connection redirects to the invalidation connection: \(list)")
        let flushes = near.statistics.flushes
        for r in readers { _ = try await fx.raw(["CLIENT", "KILL", "ID", r]) }
        #expect(try await eventually(10) { near.statistics.flushes > flushes }, "the server forgot what those connections read")
        _ = try await fx.raw(["SET", fx.key("k"), "v2"])
        #expect(try await face.get("k", as: String.self) == "v2")
        try await warmUp(face, near, "k")
        _ = try await fx.raw(["SET", fx.key("k"), "v3"])
        #expect(try await eventuallyAsync(30) { (try? await face.get("k", as: String.self)) == "v3" })
    }

    @Test(arguments: FaceKind.allCases)
    func memoryStaysWithinItsBounds(_ faceKind: FaceKind) async throws {
        let (_, cache, near) = try nearCache("tracking", .epoll, extra: ["MAX_ENTRIES": .int(200), "MAX_BYTES": .int(16384)])
        defer { cache.close() }
        let face = Face(cache, faceKind)
        try await face.set("warm", "x")
        try await warmUp(face, near, "warm")
        let value = String(repeating: "v", count: 100)
        for chunk in stride(from: 0, to: 2000, by: 250) {
            let keys = (chunk..<(chunk + 250)).map { "m\($0)" }
            _ = try await face.setMany(Dictionary(uniqueKeysWithValues: keys.map { ($0, value) }))
            #expect(try await face.getMany(keys, as: String.self).count == 250)
            let usage = near.usage
            #expect(usage.entries <= 200 && usage.bytes <= 16384, "\(usage)")
        }
        #expect(near.statistics.evictions > 0)
    }

    @Test(.enabled(if: TestServers.shouldRun(TestServers.redisSentinels != nil), Comment(rawValue: TestServers.skipMessage)),
          arguments: ["tracking", "broadcast"], FaceKind.allCases)
    func throughSentinelChangesReachTheNearCache(_ mode: String, _ faceKind: FaceKind) async throws {
        let redis = RedisFixture(sentinelOn: .epoll)
        let prefix = "s\(redis.db)"
        let cache = try redis.makeCache {
            $0.keyPrefix = prefix
            $0.options["NEAR_CACHE"] = .dict(["MODE": .string(mode)])
        }
        defer { cache.close() }
        let near = try #require((cache.backend as? RedisBackend)?.near)
        let face = Face(cache, faceKind)
        try await face.set("k", "v1")
        try await warmUp(face, near, "k")
        // Another client writes on the primary the sentinels name.
        let sentinel = try SentinelServers.firstSentinelPort()
        let (service, db) = (TestServers.redisSentinelService, redis.db)
        try await onPlainThread {
            let answer = try RawRedis(port: sentinel).command(["SENTINEL", "get-master-addr-by-name", service])
            guard let port = answer.split(separator: " ").last.flatMap({ Int($0.dropFirst()) }) else {
                throw CheckFailure(message: "no primary in \(answer)", location: "sentinel")
            }
            let primary = try RawRedis(port: port)
            _ = try primary.command(["SELECT", String(db)])
            _ = try primary.command(["SET", "\(prefix):1:k", "v2"])
        }
        #expect(try await eventuallyAsync(30) { (try? await face.get("k", as: String.self)) == "v2" })
    }

    @Test(arguments: FaceKind.allCases)
    func readsFromAReplicaAreKeptAndDroppedWhenAWriteReplicates(_ faceKind: FaceKind) async throws {
        let primary = try TestServers.need(TestServers.redisURL, "redis primary")
        let replica = try TestServers.need(TestServers.redisReplicaURL, "redis replica")
        let port = try #require(TestServers.hostPort(primary)?.1)
        let db = RedisFixture(loop: .epoll).db  // a database no other test uses
        let prefix = "replica\(db)"
        let cache = try Caches(settings: ["default": CacheSettings(
            backend: "redis", location: ["\(primary)/\(db)", "\(replica)/\(db)"], keyPrefix: prefix,
            options: ["COMMAND_TIMEOUT": 10, "NEAR_CACHE": true])]).default
        defer { cache.close() }
        let near = try #require((cache.backend as? RedisBackend)?.near)
        let face = Face(cache, faceKind)
        try await face.set("k", "v1")
        // Each round: a read from the replica is kept (the replica's own invalidation connection
        // tracks it, and a repeated read is served from process memory); then another client writes
        // on the primary, the write replicates, and the replica tells the near cache. The near cache
        // may instead drop everything meanwhile (a FLUSHDB by another test, in any database, or a
        // connection that tracked the key closed, after which the server sends nothing for it): that
        // round sees a flush instead, and the next round tries again.
        var heard = false
        for round in 2..<12 where !heard {
            let expected = "v\(round - 1)"
            let kept = try await eventuallyAsync(30) {
                let hits = near.statistics.hits
                let first = try? await face.get("k", as: String.self)
                let second = try? await face.get("k", as: String.self)
                return first == expected && second == expected && near.statistics.hits > hits && near.trackingID(server: 1) != nil
            }
            try #require(kept, "a read from the replica is kept")
            let (invalidations, flushes) = (near.statistics.invalidations, near.statistics.flushes)
            try await onPlainThread {
                let raw = try RawRedis(port: port)
                _ = try raw.command(["SELECT", String(db)])
                _ = try raw.command(["SET", "\(prefix):1:k", "v\(round)"])
            }
            let told = try await eventually(30) { near.statistics.invalidations > invalidations || near.statistics.flushes > flushes }
            try #require(told, "the replica told the near cache (an invalidation, or a flush)")
            heard = near.statistics.invalidations > invalidations
            #expect(try await eventuallyAsync(30) { (try? await face.get("k", as: String.self)) == "v\(round)" },
                    "the replicated write reached the near cache")
        }
        #expect(heard, "the replica's invalidation of a replicated write reached the near cache")
    }

    @Test func itsCountersReachTheCachesMetrics() async throws {
        let metrics = TestMetrics()
        let redis = RedisFixture(loop: .epoll, options: ["COMMAND_TIMEOUT": 10, "NEAR_CACHE": true])
        let cache = try redis.makeCache { $0.keyPrefix = "t\(redis.db)"; $0.metricsFactory = metrics }
        defer { cache.close() }
        let near = try #require((cache.backend as? RedisBackend)?.near)
        let face = Face(cache, .async)
        try await face.set("k", "v")
        try await warmUp(face, near, "k")
        func counter(_ name: String) -> Int64 {
            (try? metrics.expectCounter(name, [("alias", "redis-test")]).totalValue) ?? 0
        }
        // A read the near cache answered is not a server operation: its duration is not in
        // db.client.operation.duration (each read the server answered is).
        func durations() -> Int {
            let labels = [("db.system.name", "redis"), ("db.operation.name", "get"), ("tandem.cache.alias", "redis-test"), ("error.type", "")]
            return (try? metrics.expectTimer("db.client.operation.duration", labels).values.count) ?? 0
        }
        let (before, missesBefore, hitsBefore) = (durations(), near.statistics.misses, near.statistics.hits)
        #expect(try await eventuallyAsync(30) {
            _ = try? await face.get("k", as: String.self)
            return near.statistics.hits > hitsBefore + 5
        })
        #expect(durations() - before == near.statistics.misses - missesBefore, "one duration per read the server answered")
        // Reported once a second from the near cache's own tallies.
        #expect(try await eventually(10) { counter("tandem_near_cache_hits_total") >= 1 && counter("tandem_near_cache_misses_total") >= 1 })
        let entries = try metrics.expectGauge("tandem_near_cache_entries", [("alias", "redis-test")])
        // Read on meanwhile: a FLUSHDB by another test empties every near cache on the server.
        #expect(try await eventuallyAsync(30) {
            _ = try? await face.get("k", as: String.self)
            return entries.values.contains { $0 >= 1 }
        })
    }

    @Test func backendsThatCannotTellAChangeRefuseIt() throws {
        for (backend, location) in [("locmem", "near"), ("dummy", ""), ("memcached", "127.0.0.1:1"), ("redis", "redis+cluster://127.0.0.1:1,127.0.0.1:2")] {
            let settings = CacheSettings(backend: backend, location: [location], options: ["NEAR_CACHE": true])
            do {
                _ = try BackendRegistry.standard.makeCache(alias: "n", settings: settings, loop: TestLoops.epoll)
                Issue.record("\(backend) accepted NEAR_CACHE")
            } catch let e as CacheError {
                #expect("\(e)".contains("OPTIONS.NEAR_CACHE"), "\(e)")
                if backend != "redis" { #expect("\(e)".contains("tells this process when a key changes"), "\(e)") }
            }
        }
        let bad = CacheSettings(backend: "redis", location: ["redis://127.0.0.1:1"], options: ["NEAR_CACHE": .dict(["MODE": .string("sometimes")])])
        #expect(throws: CacheError.self) { try BackendRegistry.standard.makeCache(alias: "n", settings: bad, loop: TestLoops.epoll) }
    }
}

/// The test's Redis database and key prefix.
private struct NearFixture: Sendable {
    let redis: RedisFixture
    var prefix: String { "t\(redis.db)" }
    var port: Int { redis.port }
    var db: Int { redis.db }
    /// The key Redis stores for the cache key `key`.
    func key(_ key: String) -> String { "\(prefix):1:\(key)" }
    func raw(_ args: [String]) async throws -> String { try await redis.raw(args) }
}

/// A flag the test raises to stop its reader tasks.
private final class StopFlag: Sendable {
    let raised = Atomic<Bool>(false)
}

/// The near cache on a Redis server of the test's own, which the test restarts or fills.
@Suite(.serialized, .enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)))
struct RedisNearCacheOwnServerTests {
    private func nearCache(on server: ServerProcess, _ options: [String: SettingValue]) throws -> (Cache, NearCache) {
        let cache = try Caches(settings: ["default": CacheSettings(
            backend: "redis", location: [server.redisURL + "/0"], keyPrefix: "own",
            options: ["COMMAND_TIMEOUT": 10, "CONNECT_TIMEOUT": 10].merging(options) { _, b in b })]).default
        return (cache, try #require((cache.backend as? RedisBackend)?.near))
    }

    @Test(.timeLimit(.minutes(3)), arguments: FaceKind.allCases)
    func aRestartedServerLeavesNoOldCopy(_ faceKind: FaceKind) async throws {
        _ = try TestServers.need(TestServers.redisURL, "redis-server")
        let server = try ServerProcess(.redis)
        defer { server.stop() }
        let (cache, near) = try nearCache(on: server, ["NEAR_CACHE": true])
        defer { cache.close() }
        let face = Face(cache, faceKind)
        try await face.set("k", "v1")
        try await warmUp(face, near, "k")
        let flushes = near.statistics.flushes
        server.stop()
        try server.start()  // the same port, an empty server
        #expect(try await eventually(30) { near.statistics.flushes > flushes }, "losing the server dropped the copies")
        try await onPlainThread { _ = try RawRedis(port: server.port).command(["SET", "own:1:k", "v2"]) }
        // From here on, no read may return the value the old server had.
        var old = 0
        let fresh = try await eventuallyAsync(30) {
            let v = try? await face.get("k", as: String.self)
            if v == "v1" { old += 1 }
            return v == "v2"
        }
        #expect(fresh, "the new server's value is read")
        #expect(old == 0, "\(old) reads returned the old server's value after the near cache was emptied")
        // Tracking is back: another client's write reaches the near cache.
        try await warmUp(face, near, "k")
        try await onPlainThread { _ = try RawRedis(port: server.port).command(["SET", "own:1:k", "v3"]) }
        #expect(try await eventuallyAsync(30) { (try? await face.get("k", as: String.self)) == "v3" }, "invalidations flow again")
    }

    @Test(.timeLimit(.minutes(5)))
    func aMillionDistinctKeysReadStayWithinTheBounds() async throws {
        _ = try TestServers.need(TestServers.redisURL, "redis-server")
        let server = try ServerProcess(.redis)
        defer { server.stop() }
        // A million keys own:1:m:0 ... own:1:m:999999, 32-byte values, made by the server itself.
        _ = try await onPlainThread { try RawRedis(port: server.port).command(["DEBUG", "POPULATE", "1000000", "own:1:m", "32"]) }
        let (maxEntries, maxBytes) = (20_000, 1 << 20)
        let (cache, near) = try nearCache(on: server, ["NEAR_CACHE": .dict(["MAX_ENTRIES": .int(maxEntries), "MAX_BYTES": .int(maxBytes)])])
        defer { cache.close() }
        try await warmUp(Face(cache, .async), near, "m:0")
        var largest = (entries: 0, bytes: 0)
        for batch in 0..<1000 {
            let keys = (batch * 1000..<(batch + 1) * 1000).map { "m:\($0)" }
            let values: [String: [UInt8]] = try await cache.async.getMany(keys)
            if values.count != 1000 || values["m:\(batch * 1000)"]?.count != 32 {
                Issue.record("batch \(batch): \(values.count) values")
                return
            }
            let usage = near.usage
            largest = (max(largest.entries, usage.entries), max(largest.bytes, usage.bytes))
        }
        #expect(largest.entries <= maxEntries && largest.bytes <= maxBytes, "at most \(largest)")
        #expect(largest.entries > 0, "the near cache kept copies")
        #expect(near.statistics.evictions >= 1_000_000 - maxEntries - 1, "\(near.statistics.evictions) evictions")
    }
}
