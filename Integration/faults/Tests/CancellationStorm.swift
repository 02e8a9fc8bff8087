import Foundation
import Synchronization
import Tandem
import TandemTestSupport
import Testing

extension Faults {
    @Suite struct CancellationStorm {
        /// 10,000 async calls, all in flight (the servers are frozen with SIGSTOP, the upstream answers
        /// in 10 s), cancelled at once: every call ends promptly with a cancellation, every continuation
        /// is resumed exactly once, and nothing is left behind in Redis's connection, memcached's pool
        /// or curl's multi handle.
        @Test(.timeLimit(.minutes(2)))
        func tenThousandCallsCancelledMidFlight() async throws {
            let base = try TestServers.need(TestServers.httpUpstream, "HTTP upstream")
            let redis = try await onPlainThread { try ServerProcess(.redis) }
            defer { redis.stop() }
            let memcached = try await onPlainThread { try ServerProcess(.memcached) }
            defer { memcached.stop() }
            let caches = try Caches(settings: [
                "default": CacheSettings(backend: "redis", location: [redis.redisURL], options: ["COMMAND_TIMEOUT": 30]),
                "memcached": CacheSettings(backend: "memcached", location: [memcached.address],
                                           options: ["POLL_TIMEOUT": 3, "POOL_SIZE": 4]),
            ])
            let r = caches.default
            let m = try caches["memcached"]
            var config = UpstreamClientConfiguration()
            config.requestTimeout = .seconds(30)
            let http = UpstreamClient(configuration: config)
            try await r.async.set("k", "v")
            // Every async connection open before the connections are counted: the cache has one per
            // loop, and a task running on a loop is served by that loop's connection (off the loops,
            // the connection depends on which thread of the pool a call runs on).
            for loop in EventLoops.group.loops {
                guard let executor = loop as? any TaskExecutor else { continue }
                _ = try await Task(executorPreference: executor) { try await r.async.get("k") as String? }.value
            }
            for _ in 0..<(2 * EventLoops.group.count) { _ = try await r.async.get("k") as String? }
            try await m.async.set("k", "v")
            #expect(try await http.async.get(base + "/bytes/1").status == 200)
            let listBefore = try await onPlainThread { try redisCommand(port: redis.port, ["CLIENT", "LIST"]) }
            let connectionsBefore = listBefore.split(separator: "\n").count

            let perKind = [3334, 3333, 3333]
            let created0 = LoopPromiseStats.created
            let resumed0 = LoopPromiseStats.resumed
            redis.pause(true)
            memcached.pause(true)
            let outcomes = Box(Mutex<[String: Int]>([:]))
            let cancelledAt = Mutex<ContinuousClock.Instant?>(nil)
            let lastReturn = Box(Mutex<ContinuousClock.Instant?>(nil))
            let group = Task {
                await withTaskGroup(of: Void.self) { g in
                    for kind in 0..<3 {
                        for i in 0..<perKind[kind] {
                            g.addTask {
                                let outcome: String
                                do {
                                    switch kind {
                                    case 0: _ = try await r.async.get("k\(i)") as String?
                                    case 1: _ = try await m.async.get("k\(i)") as String?
                                    default: _ = try await http.async.get(base + "/delay/10000?i=\(i)")
                                    }
                                    outcome = "completed"
                                } catch is CancellationError {
                                    outcome = "cancelled"
                                } catch {
                                    outcome = "other: \(error)"
                                }
                                let now = ContinuousClock.now
                                lastReturn.value.locked { $0 = max($0 ?? now, now) }
                                outcomes.value.locked { $0[["redis", "memcached", "http"][kind] + " " + outcome, default: 0] += 1 }
                            }
                        }
                    }
                }
            }
            // Let every call get in flight (each makes its promise; under a sanitizer 10,000 tasks can
            // take more than a second to start, so wait for them, within a bound), then cancel them all.
            try await Task.sleep(for: .seconds(1))
            for _ in 0..<600 where LoopPromiseStats.created - created0 < 10_000 {
                try await Task.sleep(for: .milliseconds(50))
            }
            let inFlight = LoopPromiseStats.created - created0
            cancelledAt.locked { $0 = .now }
            group.cancel()
            await group.value
            let cancel = try #require(cancelledAt.locked { $0 })
            let allReturned = (lastReturn.value.locked { $0 } ?? cancel) - cancel
            redis.pause(false)
            memcached.pause(false)

            let counted = outcomes.value.locked { $0 }
            #expect(counted.values.reduce(0, +) == 10_000, "every call returned: \(counted)")
            #expect(counted["redis cancelled"] == perKind[0] && counted["memcached cancelled"] == perKind[1]
                    && counted["http cancelled"] == perKind[2], "every call ended with CancellationError: \(counted)")
            #expect(allReturned < .seconds(2), "cancelled calls returned promptly: \(allReturned)")
            #expect(inFlight >= 10_000, "all 10,000 calls were in flight when cancelled (\(inFlight) waits)")

            // Nothing left behind: the late replies are dropped, the pool and the multi handle are clean,
            // and every continuation was resumed exactly once.
            var httpActive = -1
            for _ in 0..<100 {
                httpActive = try await http.handleCounts().active
                if httpActive == 0 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(httpActive == 0, "no transfer left in curl's multi handle")
            #expect(try await r.async.get("k") == "v", "Redis answers on the same connection after the late replies")
            let listAfter = try await onPlainThread { try redisCommand(port: redis.port, ["CLIENT", "LIST"]) }
            let connectionsAfter = listAfter.split(separator: "\n").count
            #expect(connectionsAfter == connectionsBefore,
                    "no Redis connection opened or leaked (\(connectionsBefore) -> \(connectionsAfter)); before:\n\(listBefore)\nafter:\n\(listAfter)")
            // memcached's loop connection is dropped at its poll timeout (the server is frozen) and the
            // async face reconnects; the blocking face's pooled handles are all free: POOL_SIZE
            // blocking gets at once all succeed.
            try await Task.sleep(for: .seconds(3))
            #expect(try await m.async.get("k") == "v", "memcached answers after the storm")
            let pooled = try await withThrowingTaskGroup(of: String?.self) { g in
                for _ in 0..<4 { g.addTask { try await onPlainThread { try m.get("k") as String? } } }
                return try await g.reduce(into: [String?]()) { $0.append($1) }
            }
            #expect(pooled == ["v", "v", "v", "v"], "every pooled memcached handle is free")
            let handles = try await http.handleCounts()
            await http.shutdown()
            var created = 0, resumed = 0
            for _ in 0..<100 {
                created = LoopPromiseStats.created - created0
                resumed = LoopPromiseStats.resumed - resumed0
                if created == resumed { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(created == resumed, "every continuation resumed exactly once: \(created) created, \(resumed) resumed")
            Figures.record("cancellation storm: 10,000 in-flight async calls (3,334 Redis, 3,333 memcached, 3,333 HTTP) cancelled at once", [
                "returned": counted.values.reduce(0, +), "outcomes": counted,
                "all_returned_after_cancel_ms": ms(allReturned),
                "continuations_created": created, "continuations_resumed": resumed,
                "http_transfers_left": httpActive, "http_easy_handles_created": handles.created, "http_idle_handles": handles.idle,
                "redis_connections_before": connectionsBefore, "redis_connections_after": connectionsAfter,
            ])
        }
    }
}
