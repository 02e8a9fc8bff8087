import Foundation
import MetricsTestKit
import Tandem
import TandemTestSupport
import Testing

private let serversAvailable = TestServers.shouldRun(TestServers.redisURL != nil && !TestServers.memcachedServers.isEmpty)

/// The connection and pool metrics of issue 34, checked on a test metrics backend against real
/// servers: connections made and open per face, waits for a pooled connection and callers that gave
/// up, commands in flight on the loop, broken connections by kind, and breaker state changes.
@Suite(.enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)))
struct ConnectionMetricsTests {
    private static func dims(_ system: String, _ pool: String, _ face: String) -> [(String, String)] {
        [("db.system.name", system), ("db.client.connection.pool.name", pool), ("tandem.face", face)]
    }

    private static func count(_ m: TestMetrics, _ d: [(String, String)], _ state: String) -> Double? {
        (try? m.expectMeter("db.client.connection.count", d + [("db.client.connection.state", state)]))?.lastValue
    }

    @Test(.timeLimit(.minutes(3)), arguments: TestLoops.Kind.allCases)
    func redisConnectionsArePooledTimedAndCountedPerFace(_ loop: TestLoops.Kind) async throws {
        let metrics = TestMetrics()
        let fx = RedisFixture(loop: loop)
        let cache = try fx.makeCache {
            $0.metricsFactory = metrics
            $0.options["POOL_SIZE"] = 4
            $0.options["ASYNC_CONNECTIONS"] = 2
        }
        defer { cache.close() }
        let blocking = Self.dims("redis", fx.url, "blocking")
        let async = Self.dims("redis", fx.url, "async")

        try await onPlainThread {
            try cache.set("k", "v")
            for _ in 0..<5 { _ = try cache.get("k") as String? }
        }
        // One connection was made and went back to the pool after each call; nothing is borrowed now.
        #expect(try metrics.expectTimer("db.client.connection.create_time", blocking).values.count == 1)
        #expect(try metrics.expectTimer("db.client.connection.wait_time", blocking).values.count == 6)
        #expect(Self.count(metrics, blocking, "idle") == 1)
        #expect(Self.count(metrics, blocking, "used") == 0)

        // The async face: 40 concurrent reads over the two loop-driven connections.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<40 {
                group.addTask {
                    let v: String? = try await cache.async.get("k")
                    #expect(v == "v")
                }
            }
            try await group.waitForAll()
        }
        let made = try metrics.expectTimer("db.client.connection.create_time", async).values.count
        #expect((1...2).contains(made), "the async face made \(made) connections")
        #expect(Self.count(metrics, async, "used") == Double(made), "open loop-driven connections")
        let pending = try metrics.expectMeter("tandem.db.client.pending_commands", async)
        #expect(try await eventuallyAsync(30) { pending.lastValue == 0 }, "every command sent was answered")
        #expect(pending.values.contains { $0 >= 1 })
        #expect((try? metrics.expectCounter("tandem.db.client.connection.failures", async + [("error.type", "connectionFailed")])) == nil)

        // Each cache operation's duration, under OpenTelemetry's name for a server's: the five blocking
        // GETs and the forty async ones succeeded; an INCR of a value that is not a number failed, and
        // says how.
        func operation(_ name: String, _ errorType: String) -> [(String, String)] {
            [("db.system.name", "redis"), ("db.operation.name", name), ("tandem.cache.alias", "redis-test"), ("error.type", errorType)]
        }
        #expect(try metrics.expectTimer("db.client.operation.duration", operation("get", "")).values.count == 45)
        #expect(try metrics.expectTimer("db.client.operation.duration", operation("set", "")).values.count == 1)
        let refused = await #expect(throws: CacheError.self) { _ = try await cache.async.incr("k") }
        let kind = try #require(refused?.kind)
        #expect(try metrics.expectTimer("db.client.operation.duration", operation("incr", kind)).values.count == 1)
        #expect((try? metrics.expectTimer("tandem_cache_duration", [("alias", "redis-test"), ("op", "get")])) == nil,
                "a server backend's durations are not reported twice")
        // Every series of a name has the same label names: Prometheus's registry stops the process otherwise.
        let series = metrics.timers.map { ($0.label, $0.dimensions.map(\.0)) } + metrics.counters.map { ($0.label, $0.dimensions.map(\.0)) }
            + metrics.meters.map { ($0.label, $0.dimensions.map(\.0)) } + metrics.recorders.map { ($0.label, $0.dimensions.map(\.0)) }
        for (name, group) in Dictionary(grouping: series, by: \.0) {
            #expect(Set(group.map { $0.1.sorted() }).count == 1, "\(name) has series with different label names")
        }
    }

    /// A server of the test's own restarts: its open loop-driven connection breaks and is counted so,
    /// and the next command makes another.
    @Test(.timeLimit(.minutes(3)), arguments: TestLoops.Kind.allCases)
    func aConnectionTheServerClosesIsCountedAsBroken(_ loop: TestLoops.Kind) async throws {
        let server = try ServerProcess(.redis)
        defer { server.stop() }
        let metrics = TestMetrics()
        let url = "redis://127.0.0.1:\(server.port)/0"
        let cache = try BackendRegistry.standard.makeCache(
            alias: "restart-metrics",
            settings: CacheSettings(backend: "redis", location: [url], options: ["ASYNC_CONNECTIONS": 1, "COMMAND_TIMEOUT": 10],
                                    metricsFactory: metrics),
            loop: loop.loop)
        defer { cache.close() }
        let async = Self.dims("redis", url, "async")
        try await cache.async.set("k", "v")
        #expect(Self.count(metrics, async, "used") == 1)
        try await onPlainThread {
            server.stop()
            try server.start()
        }
        // The loop sees the close when it next reads from the connection: at once, or at the next
        // command, which is then sent again on a new connection (a read is idempotent).
        #expect(try await cache.async.get("k") as String? == nil, "a new server, empty")
        #expect(try metrics.expectCounter("tandem.db.client.connection.failures", async + [("error.type", "connectionFailed")]).totalValue == 1)
        #expect(try metrics.expectTimer("db.client.connection.create_time", async).values.count == 2, "a second connection was made")
        #expect(Self.count(metrics, async, "used") == 1, "and it is the one open")
    }

    @Test(.timeLimit(.minutes(3)))
    func aCallerThatGivesUpWaitingForAPooledConnectionIsCounted() async throws {
        // A server that never answers: the first caller holds the pool's one connection until the test
        // hangs up on it (no command timeout decides when: under a sanitizer, with every suite running,
        // this test's own polling can wait seconds for a thread); a second caller gives up after
        // POOL_TIMEOUT.
        let (listener, port) = try silentListener()
        defer { close(listener) }
        let metrics = TestMetrics()
        let cache = try Caches(settings: ["default": CacheSettings(
            backend: "redis", location: ["redis://127.0.0.1:\(port)/0"],
            options: ["POOL_SIZE": 1, "POOL_TIMEOUT": 0.05, "COMMAND_TIMEOUT": 120], metricsFactory: metrics)]).default
        defer { cache.close() }
        let blocking = Self.dims("redis", "redis://127.0.0.1:\(port)/0", "blocking")
        let first = Task { try await onPlainThread { try cache.get("k") as String? } }
        try #require(try await eventuallyAsync(60) { Self.count(metrics, blocking, "used") == 1 }, "the first caller holds the connection")
        await #expect(throws: CacheError.self) { try await onPlainThread { try cache.get("k") as String? } }
        #expect(try metrics.expectCounter("db.client.connection.timeouts", blocking).totalValue == 1)
        // The server side hangs up: the first caller's connection breaks.
        let accepted = try await onPlainThread { accept(listener, nil, nil) }
        try #require(accepted >= 0, "the first caller's connection was waiting to be accepted")
        close(accepted)
        await #expect(throws: CacheError.self) { try await first.value }
        #expect(try metrics.expectCounter("tandem.db.client.connection.failures", blocking + [("error.type", "connectionFailed")]).totalValue == 1)
        #expect(Self.count(metrics, blocking, "used") == 0 && (Self.count(metrics, blocking, "idle") ?? 0) == 0,
                "the timed-out connection was not put back")
    }

    @Test(.timeLimit(.minutes(3)), arguments: TestLoops.Kind.allCases)
    func memcachedHandlesAndLoopConnectionsAreCounted(_ loop: TestLoops.Kind) async throws {
        let server = try #require(TestServers.memcachedServers.first)
        let metrics = TestMetrics()
        let cache = try BackendRegistry.standard.makeCache(
            alias: "mc-metrics", settings: CacheSettings(backend: "memcached", location: [server], metricsFactory: metrics), loop: loop.loop)
        defer { cache.close() }
        try await onPlainThread {
            try cache.set("metrics-k", "v")
            _ = try cache.get("metrics-k") as String?
        }
        let blocking = try #require(metrics.timers.first { $0.label == "db.client.connection.wait_time" && $0.dimensions.contains { $0 == ("tandem.face", "blocking") } })
        #expect(blocking.values.count == 2)
        #expect(blocking.dimensions.contains { $0 == ("db.system.name", "memcached") })
        #expect(try await cache.async.get("metrics-k") as String? == "v")
        let async = try #require(metrics.meters.first {
            $0.label == "db.client.connection.count" && $0.dimensions.contains { $0 == ("tandem.face", "async") }
                && $0.dimensions.contains { $0 == ("db.client.connection.state", "used") }
        })
        #expect(async.lastValue == 1, "one loop-driven connection is open")
        let pending = try #require(metrics.meters.first {
            $0.label == "tandem.db.client.pending_commands" && $0.dimensions.contains { $0 == ("tandem.face", "async") }
        })
        #expect(!metrics.meters.contains { $0.label == "tandem.db.client.pending_commands" && $0.dimensions.contains { $0 == ("tandem.face", "blocking") } })
        #expect(try await eventuallyAsync(30) { pending.lastValue == 0 }, "every command sent was answered")
        #expect(pending.values.contains { $0 >= 1 })
    }

    @Test(.timeLimit(.minutes(3)))
    func aBreakerReportsOpeningProbingAndClosing() async throws {
        let port = try freeLoopbackPort()
        let metrics = TestMetrics()
        let cache = try Caches(settings: ["default": CacheSettings(
            backend: "redis", location: ["redis://127.0.0.1:\(port)/0"],
            // A cool-down long enough that the call right after the breaker opens meets it open even when
            // a sanitizer run keeps this test waiting for a thread between two calls.
            options: ["CIRCUIT_BREAKER_THRESHOLD": 2, "CIRCUIT_BREAKER_COOLDOWN": 10, "CONNECT_TIMEOUT": 1], metricsFactory: metrics)]).default
        defer { cache.close() }
        func transitions(_ state: String) -> Int64 {
            (try? metrics.expectCounter("tandem.cache.breaker.transitions", [("alias", "default"), ("server", "*"), ("state", state)]).totalValue) ?? 0
        }
        for _ in 0..<2 { await #expect(throws: CacheError.self) { try await cache.async.get("k") as String? } }
        #expect(transitions("open") == 1)
        await #expect(throws: CacheError.circuitOpen(alias: "default")) { try await cache.async.get("k") as String? }
        // After the cool-down one call probes; the server is still down, so the breaker opens again.
        try await Task.sleep(for: .milliseconds(10_100))
        await #expect(throws: CacheError.self) { try await cache.async.get("k") as String? }
        #expect(transitions("half_open") == 1 && transitions("open") == 2)
        #expect(transitions("closed") == 0)
    }
}
