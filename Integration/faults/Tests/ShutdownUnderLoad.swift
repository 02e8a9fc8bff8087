import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import Tandem
import TandemTestSupport
import Testing

extension Faults {
    @Suite struct ShutdownUnderLoad {
        /// What one call ended with.
        enum Ending: String { case ok, timeout, shutDown, otherTypedError, untyped }

        /// Runs `body` and classifies how it ended; an untyped error is a test failure.
        static func ending(_ what: String, _ body: () async throws -> Void) async -> Ending {
            do {
                try await body()
                return .ok
            } catch let e as CacheError {
                switch e.code {
                case .timeout: return .timeout
                case .shutDown: return .shutDown
                default: return .otherTypedError
                }
            } catch let e as UpstreamError {
                if case .clientShutDown = e { return .shutDown }
                return .otherTypedError
            } catch {
                Issue.record("\(what) ended with an untyped error: \(type(of: error)) \(error)")
                return .untyped
            }
        }

        /// A service group (loop, caches, HTTP client) shut down gracefully with 1,000 Redis, memcached
        /// and HTTP calls in flight: every call ends (finishes, or fails typed at its own timeout), the
        /// services stop in order within a bound, later calls fail at once with typed errors, every
        /// continuation is resumed exactly once, and the connections are closed.
        @Test(.timeLimit(.minutes(2)), arguments: TestLoops.Kind.allCases)
        func aServiceGroupDrainsAThousandCallsInFlight(_ kind: TestLoops.Kind) async throws {
            let base = try TestServers.need(TestServers.httpUpstream, "HTTP upstream")
            let redis = try await onPlainThread { try ServerProcess(.redis) }
            defer { redis.stop() }
            let memcached = try await onPlainThread { try ServerProcess(.memcached) }
            defer { memcached.stop() }
            let loop = kind.makePrivateLoop("shutdown-\(kind)")
            let caches = try Caches(settings: [
                "default": CacheSettings(backend: "redis", location: [redis.redisURL], options: ["COMMAND_TIMEOUT": 2]),
                "memcached": CacheSettings(backend: "memcached", location: [memcached.address], options: ["POLL_TIMEOUT": 2]),
            ], loop: loop)
            var config = UpstreamClientConfiguration()
            config.requestTimeout = .seconds(30)
            let http = UpstreamClient(loop: loop, configuration: config)
            let r = caches.default
            let m = try caches["memcached"]
            try await r.async.set("k", "v")
            try await m.async.set("k", "v")
            #expect(try await http.async.get(base + "/bytes/1").status == 200)

            let loopService = try #require(loop as? any Service)
            // Shut down in reverse order: the HTTP client, then the caches, then the loop.
            let group = ServiceGroup(services: [loopService, caches, http], logger: Logger(label: "test.shutdown"))
            let created0 = LoopPromiseStats.created
            let resumed0 = LoopPromiseStats.resumed
            let endings = Box(Mutex<[String: Int]>([:]))
            let started = Box(Atomic<Int>(0))
            let clock = ContinuousClock()
            var groupEnded: Duration = .zero
            // Redis and memcached are frozen: their calls stay in flight until their 2 s timeouts; the
            // upstream answers each request after 200 ms.
            redis.pause(true)
            memcached.pause(true)
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                for i in 0..<1000 {
                    let (what, call): (String, @Sendable () async throws -> Void) = switch i % 10 {
                    case 0..<4: ("redis", { _ = try await r.async.get("k\(i)") as String? })
                    case 4..<7: ("memcached", { _ = try await m.async.get("k\(i)") as String? })
                    default: ("http", { _ = try await http.async.get(base + "/delay/200") })
                    }
                    tasks.addTask {
                        started.value.add(1, ordering: .relaxed)
                        let e = await ShutdownUnderLoad.ending(what, call)
                        endings.value.locked { $0["\(what).\(e.rawValue)", default: 0] += 1 }
                    }
                }
                // Every call has started (what has not reached its server yet ends the same way).
                _ = try await eventually(30) { started.value.load(ordering: .relaxed) == 1000 }
                try await Task.sleep(for: .milliseconds(100))
                let t0 = clock.now
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
                groupEnded = clock.now - t0
            }
            redis.pause(false)
            memcached.pause(false)
            let seen = endings.value.locked { $0 }
            #expect(seen.values.reduce(0, +) == 1000, "every call ended: \(seen)")
            #expect(seen.keys.allSatisfy { !$0.hasSuffix(".untyped") }, "every failure is typed: \(seen)")
            #expect(seen["http.ok"] == 300, "HTTP calls in flight finished within the grace period: \(seen)")
            #expect(LoopPromiseStats.created - created0 == LoopPromiseStats.resumed - resumed0,
                    "every continuation created was resumed once")

            // After the shutdown: refused at once, typed, in both faces.
            await #expect(throws: CacheError.shutDown("cache 'default'")) { try await r.async.get("after") as String? }
            await #expect(throws: CacheError.shutDown("cache 'memcached'")) { try await m.async.get("after") as String? }
            await #expect(throws: CacheError.shutDown("cache 'default'")) { try await onPlainThread { try r.get("after") as String? } }
            await #expect(throws: UpstreamError.clientShutDown) { try await http.async.get(base + "/bytes/1") }
            await #expect(throws: TandemError.self) { try loop.execute {} }

            // Nothing is left connected to the servers but this test's own probe. (The server, just
            // resumed, may answer the probe before it reads the closes queued while it was stopped.)
            var redisClients = 0
            _ = try await eventuallyAsync(10) {
                redisClients = (try? await onPlainThread { try redisCommand(port: redis.port, ["CLIENT", "LIST"]) })?
                    .split(separator: "\n").filter { $0.contains("addr=") }.count ?? -1
                return redisClients == 1
            }
            #expect(redisClients == 1, "Redis connections left: \(redisClients - 1)")
            let memcachedConnections = try await onPlainThread { try memcachedStat(memcached.address, "curr_connections") }
            Figures.record("graceful shutdown of a service group with 1,000 calls in flight (\(kind) loop)", [
                "calls": 1000, "endings": seen, "group_shutdown_ms": ms(groupEnded),
                "continuations_created": LoopPromiseStats.created - created0,
                "continuations_resumed": LoopPromiseStats.resumed - resumed0,
                "redis_connections_left": redisClients - 1, "memcached_curr_connections_after": memcachedConnections,
            ])
        }

        /// A loop shut down (no graceful drain) under Redis commands and HTTP transfers in flight on
        /// it: every one ends at once with a typed error.
        @Test(.timeLimit(.minutes(3)), arguments: TestLoops.Kind.allCases)
        func aLoopShutDownUnderCallsEndsThemTyped(_ kind: TestLoops.Kind) async throws {
            let base = try TestServers.need(TestServers.httpUpstream, "HTTP upstream")
            let redis = try await onPlainThread { try ServerProcess(.redis) }
            defer { redis.stop() }
            let loop = kind.makePrivateLoop("hard-shutdown-\(kind)")
            let caches = try Caches(settings: ["default": CacheSettings(backend: "redis", location: [redis.redisURL],
                                                                      options: ["COMMAND_TIMEOUT": 60])], loop: loop)
            var config = UpstreamClientConfiguration()
            config.requestTimeout = .seconds(60)
            let http = UpstreamClient(loop: loop, configuration: config)
            try await caches.default.async.set("k", "v")
            redis.pause(true)
            defer { redis.pause(false) }
            let endings = Box(Mutex<[String: Int]>([:]))
            let clock = ContinuousClock()
            var ended: Duration = .zero
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for i in 0..<200 {
                    let redisCall = i % 2 == 0
                    tasks.addTask {
                        let e = await ShutdownUnderLoad.ending(redisCall ? "redis" : "http") {
                            if redisCall { _ = try await caches.default.async.get("k\(i)") as String? } else {
                                _ = try await http.async.get(base + "/delay/30000")
                            }
                        }
                        endings.value.locked { $0["\(redisCall ? "redis" : "http").\(e.rawValue)", default: 0] += 1 }
                    }
                }
                try await Task.sleep(for: .milliseconds(300))
                let t0 = clock.now
                await loop.shutdownGracefully()
                try await tasks.waitForAll()
                ended = clock.now - t0
            }
            let seen = endings.value.locked { $0 }
            #expect(seen == ["redis.shutDown": 100, "http.shutDown": 100], "\(seen)")
            Figures.record("event loop shut down under 100 Redis commands and 100 HTTP transfers (\(kind) loop)", [
                "endings": seen, "all_ended_ms": ms(ended),
            ])
        }
    }
}
