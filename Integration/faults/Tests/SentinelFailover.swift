import Foundation
import MetricsTestKit
import Synchronization
import Tandem
import TandemTestSupport
import Testing

extension Faults {
    /// A Sentinel failover (`SENTINEL FAILOVER`) under load, on the test command's sentinels: the
    /// primary and the replica swap roles, so this runs only here, in the serialized fault phase.
    @Suite struct SentinelFailover {
        static let timeouts: [String: SettingValue] = ["COMMAND_TIMEOUT": 1, "CONNECT_TIMEOUT": 1, "POOL_TIMEOUT": 2]
        /// The longest a call may take: the sentinels asked (each within the connect and command
        /// timeouts), a connect, a command, one retry of an idempotent one, and slack for a loaded
        /// 2-core machine.
        static let callBound: Duration = .seconds(10)

        /// `host:port` of the primary the first sentinel names.
        static func primary(_ sentinelPort: Int, _ service: String) throws -> String {
            let reply = try RawRedis(port: sentinelPort).command(["SENTINEL", "get-master-addr-by-name", service])
            let parts = reply.split(separator: " ")  // "*2 $host $port"
            guard parts.count == 3 else { throw CheckFailure(message: "unexpected answer \(reply)", location: "SentinelFailover") }
            return "\(parts[1].dropFirst()):\(parts[2].dropFirst())"
        }

        @Test(.timeLimit(.minutes(3)))
        func failoverUnderLoadLosesNoCallAndWritesNothingToAReplica() async throws {
            let sentinels = try TestServers.need(TestServers.redisSentinels, "redis sentinels")
            let service = TestServers.redisSentinelService
            let sentinelPort = try #require(TestServers.hostPort(String(sentinels.split(separator: ",")[0]))?.1)
            // The sentinels must know the replica, and it must be in sync, before a failover can pick it.
            let ready = try await eventuallyAsync(60) {
                let replicas = (try? await onPlainThread { try RawRedis(port: sentinelPort).command(["SENTINEL", "replicas", service]) }) ?? ""
                return replicas.contains("$flags $slave ") && replicas.contains("$master-link-status $ok")
            }
            try #require(ready, "the sentinels never saw an in-sync replica")
            let before = try await onPlainThread { try Self.primary(sentinelPort, service) }

            let metrics = TestMetrics()
            let cache = try Caches(settings: [
                "default": CacheSettings(backend: "redis", location: ["redis+sentinel://\(sentinels)/\(service)/5"], options: Self.timeouts,
                                         metricsFactory: metrics),
            ]).default
            // The same keys read through a near cache large enough to keep every one: what it kept from
            // the old primary must not outlive the failover (checked against the server after the load).
            let nearOptions: [String: SettingValue] = ["NEAR_CACHE": .dict(["MAX_ENTRIES": .int(2_000_000), "MAX_BYTES": .int(1 << 30)])]
            let near = try Caches(settings: [
                "default": CacheSettings(backend: "redis", location: ["redis+sentinel://\(sentinels)/\(service)/5"],
                                         options: Self.timeouts.merging(nearOptions) { _, b in b }),
            ]).default
            defer { near.close() }
            let log = CallLog()
            let acknowledged = Mutex<[(key: String, at: ContinuousClock.Instant)]>([])
            let readOnly = Atomic<Int>(0)
            let readOnlyBox = Box(readOnly)
            let failoverAt = Mutex<ContinuousClock.Instant?>(nil)
            let switchedAt = Mutex<ContinuousClock.Instant?>(nil)
            @Sendable func note(_ error: any Error) {
                if "\(error)".contains("READONLY") { readOnlyBox.value.add(1, ordering: .relaxed) }
            }
            try await underLoad(
                duration: .seconds(14), tasks: 64, threads: 4,
                asyncCall: { w, i in
                    await log.run("async") {
                        do {
                            if i % 2 == 0 {
                                let key = "a-\(w)-\(i)"
                                try await cache.async.set(key, key)
                                acknowledged.locked { $0.append((key, .now)) }
                            } else {
                                _ = try await cache.async.get("a-\(w)-\(i - 1)") as String?
                                _ = try? await near.async.get("a-\(w)-\(i - 1)") as String?
                            }
                        } catch {
                            note(error)
                            throw error
                        }
                    }
                },
                blockingCall: { t, i in
                    log.run("blocking") {
                        do {
                            if i % 2 == 0 {
                                let key = "b-\(t)-\(i)"
                                try cache.set(key, key)
                                acknowledged.locked { $0.append((key, .now)) }
                            } else {
                                _ = try cache.get("b-\(t)-\(i - 1)") as String?
                            }
                        } catch {
                            note(error)
                            throw error
                        }
                    }
                },
                script: {
                    try await Task.sleep(for: .seconds(2))
                    failoverAt.locked { $0 = .now }
                    let answer = try await onPlainThread { try RawRedis(port: sentinelPort).command(["SENTINEL", "FAILOVER", service]) }
                    #expect(answer == "+OK", "SENTINEL FAILOVER answered \(answer)")
                    let switched = try await eventuallyAsync(30) {
                        (try? await onPlainThread { try Self.primary(sentinelPort, service) }).map { $0 != before } ?? false
                    }
                    #expect(switched, "the sentinels never named a new primary")
                    switchedAt.locked { $0 = .now }
                })

            let failover = try #require(failoverAt.locked { $0 })
            let switched = try #require(switchedAt.locked { $0 })
            let after = try await onPlainThread { try Self.primary(sentinelPort, service) }
            #expect(after != before, "the primary changed: \(before) -> \(after)")
            log.expectEveryCallReturnedTypedWithin(Self.callBound)
            #expect(readOnlyBox.value.load(ordering: .relaxed) == 0, "no write went to a replica (READONLY answers)")
            // The watcher heard the sentinels' +switch-master (announced to subscribers at once; the bound
            // only covers a resubscription after a break).
            let announced = try await eventuallyAsync(30) {
                ((try? metrics.expectCounter("tandem.redis.sentinel.failovers", [("tandem.redis.sentinel.service", service)]))?.totalValue ?? 0) >= 1
            }
            #expect(announced, "tandem.redis.sentinel.failovers counted the failover")
            let asyncRecovery = try #require(log.firstSuccess(of: "async", after: switched), "async face works after the failover")
            let blockingRecovery = try #require(log.firstSuccess(of: "blocking", after: switched), "blocking face works after the failover")
            let asyncAllClear = log.lastFailure(of: "async", after: failover) ?? .zero
            let blockingAllClear = log.lastFailure(of: "blocking", after: failover) ?? .zero

            // Which acknowledged writes the new primary has: Redis replicates asynchronously, so the
            // writes the old primary took in the failover window can be gone.
            let writes = acknowledged.locked { $0 }
            var lost: [(key: String, at: ContinuousClock.Instant)] = []
            var nearDiffers: [String] = []
            for chunk in stride(from: 0, to: writes.count, by: 500).map({ Array(writes[$0..<min($0 + 500, writes.count)]) }) {
                let found: [String: String] = try await cache.async.getMany(chunk.map(\.key))
                lost += chunk.filter { found[$0.key] == nil }
                let throughNear: [String: String] = try await near.async.getMany(chunk.map(\.key))
                nearDiffers += chunk.map(\.key).filter { throughNear[$0] != found[$0] }
            }
            #expect(nearDiffers.isEmpty, "\(nearDiffers.count) keys read through the near cache differ from the server, first \(nearDiffers.first ?? "")")
            // The bound: only writes acknowledged from shortly before the failover began until shortly
            // after the sentinels named the new primary can be lost.
            let outside = lost.filter { $0.at < failover - .seconds(1) || $0.at > switched + .seconds(5) }
            #expect(outside.count == 0, "\(outside.count) writes lost outside the failover window, first \(outside.first?.key ?? "")")
            Figures.record("redis sentinel failover under load (64 tasks, 4 threads, SENTINEL FAILOVER)", [
                "calls": log.all.count, "outcomes": log.outcomeCounts, "unfinished": log.unfinished,
                "worst_call_ms": ms(log.worstLatency),
                "sentinels_switched_after_ms": ms(switched - failover),
                "async_first_success_after_switch_ms": ms(asyncRecovery),
                "blocking_first_success_after_switch_ms": ms(blockingRecovery),
                "async_last_failure_after_failover_ms": ms(asyncAllClear),
                "blocking_last_failure_after_failover_ms": ms(blockingAllClear),
                "acknowledged_writes": writes.count, "acknowledged_writes_lost": lost.count,
                "readonly_answers": readOnlyBox.value.load(ordering: .relaxed),
                "near_cache_keys_differing_from_the_server": nearDiffers.count,
            ])
        }



        /// `READ_FROM_REPLICAS` with the only replica frozen (SIGSTOP) until the sentinels hold it down:
        /// readers fall back to the primary and reads go on; once it is thawed and the sentinels list it
        /// again, readers return to it (both faces), and no read ever returns a wrong value.
        @Test(.timeLimit(.minutes(3)))
        func replicaReadersFallBackToThePrimaryAndReturn() async throws {
            let sentinels = try TestServers.need(TestServers.redisSentinels, "redis sentinels")
            let service = TestServers.redisSentinelService
            let replicaPort = try await SentinelServers.healthyReplicaPort(within: 60)
            let replicaPID = try await onPlainThread { try RedisDaemon(port: replicaPort).pid }
            let cache = try Caches(settings: [
                "default": CacheSettings(backend: "redis", location: ["redis+sentinel://\(sentinels)/\(service)/6"],
                                         options: Self.timeouts.merging(["READ_FROM_REPLICAS": true]) { $1 }),
            ]).default
            let keys = (0..<64).map { "replica-fallback-\($0)" }
            try await cache.async.setMany(Dictionary(uniqueKeysWithValues: keys.map { ($0, "value of \($0)") }))
            // Replication is asynchronous: every key on the replica before the reads begin.
            let copied = try await eventuallyAsync(20) {
                let found: [String: String] = (try? await cache.async.getMany(keys)) ?? [:]
                return found.count == keys.count
            }
            try #require(copied, "the replica never had the keys")

            let log = CallLog()
            let stoppedAt = Mutex<ContinuousClock.Instant?>(nil)
            let downAt = Mutex<ContinuousClock.Instant?>(nil)
            let thawedAt = Mutex<ContinuousClock.Instant?>(nil)
            let thawed = Atomic<Bool>(false)
            let thawedBox = Box(thawed)
            defer { if !thawedBox.value.load(ordering: .relaxed) { kill(pid_t(replicaPID), SIGCONT) } }
            try await underReadLoad(cache, keys: keys, log: log, duration: .seconds(20), tasks: 32, threads: 2,
                script: {
                    try await Task.sleep(for: .seconds(1))
                    stoppedAt.locked { $0 = .now }
                    #expect(kill(pid_t(replicaPID), SIGSTOP) == 0, "the replica was frozen")
                    let down = try await eventuallyAsync(20) { (try? await SentinelServers.replicaIsDown(port: replicaPort)) ?? false }
                    #expect(down, "the sentinels never held the frozen replica down")
                    downAt.locked { $0 = .now }
                    // Reads go on, from the primary, while the replica stays frozen.
                    try await Task.sleep(for: .seconds(6))
                    thawedBox.value.store(true, ordering: .relaxed)
                    #expect(kill(pid_t(replicaPID), SIGCONT) == 0, "the replica was thawed")
                    thawedAt.locked { $0 = .now }
                })

            let stopped = try #require(stoppedAt.locked { $0 })
            let down = try #require(downAt.locked { $0 })
            let thawedInstant = try #require(thawedAt.locked { $0 })
            log.expectEveryCallReturnedTypedWithin(Self.callBound)
            // Fallback: reads that began once the sentinels held the replica down, and ended before it
            // was thawed, succeeded (served by the primary) in both faces.
            for face in ["async", "blocking"] {
                let servedWhileDown = log.all.filter { $0.face == face && $0.start >= down && $0.end < thawedInstant && $0.outcome == .ok }.count
                #expect(servedWhileDown > 0, "\(face) reads were served while the replica was down")
            }
            let asyncFallback = log.firstSuccess(of: "async", after: down)
            let blockingFallback = log.firstSuccess(of: "blocking", after: down)

            // Return: once the sentinels list the replica healthy again, reads of both faces reach it.
            _ = try await SentinelServers.healthyReplicaPort(within: 30)
            let listedAgain = ContinuousClock.now
            var returned: [String: Duration] = [:]
            for face in ["async", "blocking"] {
                let came = try await eventuallyAsync(30) {
                    let before = (try? await SentinelServers.getsAnswered(port: replicaPort)) ?? 0
                    for key in keys.prefix(20) {
                        let got: String? = face == "async"
                            ? try? await cache.async.get(key)
                            : try? await onPlainThread { try cache.get(key) as String? }
                        if got != "value of \(key)" { return false }
                    }
                    let after = (try? await SentinelServers.getsAnswered(port: replicaPort)) ?? 0
                    return after - before >= 20
                }
                #expect(came, "\(face) reads came back to the replica")
                returned[face] = .now - listedAgain
            }
            try await cache.async.deleteMany(keys)
            Figures.record("redis sentinel replica frozen under read load (READ_FROM_REPLICAS, 32 tasks, 2 threads)", [
                "calls": log.all.count, "outcomes": log.outcomeCounts, "unfinished": log.unfinished,
                "worst_call_ms": ms(log.worstLatency),
                "sentinels_held_down_after_ms": ms(down - stopped),
                "async_first_read_after_down_ms": asyncFallback.map(ms) ?? -1,
                "blocking_first_read_after_down_ms": blockingFallback.map(ms) ?? -1,
                "async_back_on_replica_after_listed_ms": returned["async"].map(ms) ?? -1,
                "blocking_back_on_replica_after_listed_ms": returned["blocking"].map(ms) ?? -1,
            ])
        }
    }
}
