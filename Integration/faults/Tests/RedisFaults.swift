import Foundation
import Synchronization
import Tandem
import TandemTestSupport
import Testing

extension Faults {
    @Suite struct RedisFaults {
        static let timeouts: [String: SettingValue] = ["COMMAND_TIMEOUT": 0.5, "CONNECT_TIMEOUT": 0.5, "POOL_TIMEOUT": 1]

        /// The longest a call may take with these timeouts: connect, command, and one retry of an
        /// idempotent command on a fresh connection, plus scheduling slack on a loaded 2-core machine.
        static let callBound: Duration = .milliseconds(2 * (500 + 500) + 1000)

        @Test(.timeLimit(.minutes(2)))
        func killedAndRestartedUnderLoad() async throws {
            let server = try await onPlainThread { try ServerProcess(.redis) }
            defer { server.stop() }
            let cache = try Caches(settings: [
                "default": CacheSettings(backend: "redis", location: [server.redisURL], options: RedisFaults.timeouts),
            ]).default
            for i in 0..<100 { try await cache.async.set("k\(i)", "v\(i)") }

            let log = CallLog()
            let killedAt = Mutex<ContinuousClock.Instant?>(nil)
            let restartedAt = Mutex<ContinuousClock.Instant?>(nil)
            let wrong = Atomic<Int>(0)
            let wrongBox = Box(wrong)
            try await underLoad(
                duration: .seconds(9), tasks: 64, threads: 4,
                asyncCall: { w, i in
                    await log.run("async") {
                        let k = "k\((w * 7 + i) % 100)"
                        if i % 2 == 0 {
                            if let v: String = try await cache.async.get(k), v != "v" + k.dropFirst() { wrongBox.value.add(1, ordering: .relaxed) }
                        } else {
                            try await cache.async.set(k, "v" + k.dropFirst())
                        }
                    }
                },
                blockingCall: { t, i in
                    log.run("blocking") {
                        let k = "k\((t * 13 + i) % 100)"
                        if i % 2 == 0 {
                            if let v: String = try cache.get(k), v != "v" + k.dropFirst() { wrongBox.value.add(1, ordering: .relaxed) }
                        } else {
                            try cache.set(k, "v" + k.dropFirst())
                        }
                    }
                },
                script: {
                    try await Task.sleep(for: .seconds(2))
                    killedAt.locked { $0 = .now }
                    await onPlainThreadVoid { server.stop() }
                    try await Task.sleep(for: .seconds(2))
                    try await onPlainThread { try server.start() }
                    restartedAt.locked { $0 = .now }
                })

            let restart = try #require(restartedAt.locked { $0 })
            let kill = try #require(killedAt.locked { $0 })
            log.expectEveryCallReturnedTypedWithin(RedisFaults.callBound)
            #expect(wrongBox.value.load(ordering: .relaxed) == 0, "no call returned another key's value")
            let failuresDuringOutage = log.all.filter { $0.outcome != .ok && $0.end >= kill && $0.start <= restart }.count
            #expect(failuresDuringOutage > 0, "the outage was felt (the fault really happened)")
            let asyncRecovery = try #require(log.firstSuccess(of: "async", after: restart), "async face recovered")
            let blockingRecovery = try #require(log.firstSuccess(of: "blocking", after: restart), "blocking face recovered")
            let asyncAllClear = log.lastFailure(of: "async", after: restart) ?? .zero
            let blockingAllClear = log.lastFailure(of: "blocking", after: restart) ?? .zero
            #expect(asyncAllClear < .seconds(4) && blockingAllClear < .seconds(4), "no failures long after the restart")
            // The restarted server is empty (no persistence): the cache works on it again, both faces.
            try await cache.async.set("after", "restart")
            #expect(try await onPlainThread { try cache.get("after") as String? } == "restart")
            Figures.record("redis killed and restarted under load (64 tasks, 4 threads, 2 s outage)", [
                "calls": log.all.count, "outcomes": log.outcomeCounts, "unfinished": log.unfinished,
                "worst_call_ms": ms(log.worstLatency),
                "async_first_success_after_restart_ms": ms(asyncRecovery),
                "blocking_first_success_after_restart_ms": ms(blockingRecovery),
                "async_last_failure_after_restart_ms": ms(asyncAllClear),
                "blocking_last_failure_after_restart_ms": ms(blockingAllClear),
            ])
        }

        @Test(.timeLimit(.minutes(1)))
        func primaryDownWithReplicaUp() async throws {
            let primary = try await onPlainThread { try ServerProcess(.redis) }
            defer { primary.stop() }
            let replica = try await onPlainThread {
                try ServerProcess(.redis, extraArguments: ["--replicaof", "127.0.0.1", String(primary.port)])
            }
            defer { replica.stop() }
            let cache = try Caches(settings: [
                "default": CacheSettings(backend: "redis", location: [primary.redisURL, replica.redisURL], options: RedisFaults.timeouts),
            ]).default
            try await cache.async.set("page", "cached")
            try await onPlainThread { try cache.set("counter", 1) }
            // Wait until the replica has both keys.
            var replicated = false
            for _ in 0..<200 {
                let page = try await onPlainThread { try redisCommand(port: replica.port, ["GET", ":1:page"]) }
                let counter = try await onPlainThread { try redisCommand(port: replica.port, ["GET", ":1:counter"]) }
                if page.contains("cached") && counter.contains("1") { replicated = true; break }
                try await Task.sleep(for: .milliseconds(25))
            }
            #expect(replicated, "the replica caught up")
            await onPlainThreadVoid { primary.stop() }

            let log = CallLog()
            for _ in 0..<50 {
                await log.run("async read") { try #require(try await cache.async.get("page") as String? == "cached") }
                await log.run("blocking read") { try #require(try await onPlainThread { try cache.get("page") as String? } == "cached") }
            }
            let reads = log.all
            #expect(reads.allSatisfy { $0.outcome == .ok }, "reads keep working from the replica: \(log.outcomeCounts)")

            let writes = CallLog()
            await writes.run("async set") { try await cache.async.set("page", "new") }
            await writes.run("async incr") { _ = try await cache.async.incr("counter") }
            await writes.run("async delete") { _ = try await cache.async.delete("page") }
            await writes.run("blocking set") { try await onPlainThread { try cache.set("page", "new") } }
            await writes.run("blocking incr") { _ = try await onPlainThread { try cache.incr("counter") } }
            for w in writes.all {
                #expect(w.outcome == .typedError("connectionFailed") || w.outcome == .typedError("timeout"),
                        "\(w.face) fails with a typed error, got \(w.outcome)")
                #expect(w.end - w.start <= RedisFaults.callBound, "\(w.face) failed in time")
            }
            #expect(try await cache.async.get("page") == "cached", "the failed writes changed nothing")
            Figures.record("redis primary down, replica up", [
                "reads": reads.count, "read_outcomes": log.outcomeCounts,
                "worst_read_ms": ms(log.worstLatency),
                "writes": writes.all.count, "write_outcomes": writes.outcomeCounts,
                "worst_write_failure_ms": ms(writes.worstLatency),
            ])
        }
    }
}

/// Runs blocking, non-throwing work on a plain thread.
func onPlainThreadVoid(_ body: @escaping @Sendable () -> Void) async {
    _ = try? await onPlainThread { body() }
}
