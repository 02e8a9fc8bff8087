import Foundation
import Synchronization
import Tandem
import TandemTestSupport
import Testing

extension Faults {
    @Suite struct MemcachedFaults {
        @Test(.timeLimit(.minutes(2)))
        func oneOfThreeKilledAndRestartedUnderLoad() async throws {
            let servers = try await onPlainThread { try (0..<3).map { _ in try ServerProcess(.memcached) } }
            defer { servers.forEach { $0.stop() } }
            let options: [String: SettingValue] = ["CONNECT_TIMEOUT": 0.3, "POLL_TIMEOUT": 0.3, "RETRY_TIMEOUT": 1]
            let cache = try Caches(settings: [
                "default": CacheSettings(backend: "memcached", location: servers.map(\.address), options: options),
            ]).default
            let keys = (0..<300).map { "k\($0)" }
            for k in keys { try await cache.async.set(k, "v-" + k) }
            // Which server holds each key (read directly from the servers).
            let owner: [String: Int] = try await onPlainThread {
                var out: [String: Int] = [:]
                for k in keys {
                    for (i, s) in servers.enumerated() where try memcachedRawGet(s.address, ":1:" + k) != nil { out[k] = i }
                }
                return out
            }
            #expect(owner.count == keys.count, "every key is on some server")
            #expect(Set(owner.values).count == 3, "keys are spread over the three servers")
            let victim = 1
            let victimKeys = keys.filter { owner[$0] == victim }
            let usedAgainAfter = Mutex<Duration?>(nil)

            struct Read: Sendable { let key: String; let at: ContinuousClock.Instant; let value: String?; let failed: Bool }
            let reads = Mutex<[Read]>([])
            let log = CallLog()
            let killedAt = Mutex<ContinuousClock.Instant?>(nil)
            let restartedAt = Mutex<ContinuousClock.Instant?>(nil)
            @Sendable func record(_ key: String, _ value: String?, failed: Bool, at: ContinuousClock.Instant) {
                reads.locked { $0.append(Read(key: key, at: at, value: value, failed: failed)) }
            }
            try await underLoad(
                duration: .seconds(8), tasks: 64, threads: 2,
                asyncCall: { w, i in
                    let k = keys[(w * 31 + i * 7) % keys.count]
                    let at = ContinuousClock.now
                    var value: String?
                    await log.run("async") { value = try await cache.async.get(k) }
                    record(k, value, failed: log.all.last?.outcome != .ok && value == nil, at: at)
                },
                blockingCall: { t, i in
                    let k = keys[(t * 17 + i * 11) % keys.count]
                    let at = ContinuousClock.now
                    var value: String?
                    var failed = false
                    log.run("blocking") {
                        do { value = try cache.get(k) } catch { failed = true; throw error }
                    }
                    record(k, value, failed: failed, at: at)
                },
                script: {
                    try await Task.sleep(for: .milliseconds(1500))
                    killedAt.locked { $0 = .now }
                    await onPlainThreadVoid { servers[victim].stop() }
                    try await Task.sleep(for: .milliseconds(2500))
                    try await onPlainThread { try servers[victim].start() }
                    let restart = ContinuousClock.now
                    restartedAt.locked { $0 = restart }
                    // The restarted server (empty) is used again once the retry timeout has passed:
                    // writes of its keys land on it.
                    for _ in 0..<100 {
                        for k in victimKeys.prefix(10) { try? await cache.async.set(k, "v-" + k) }
                        let landed = try await onPlainThread {
                            try victimKeys.prefix(10).filter { try memcachedRawGet(servers[victim].address, ":1:" + $0) != nil }.count
                        }
                        if landed == 10 { usedAgainAfter.locked { $0 = .now - restart }; return }
                        try await Task.sleep(for: .milliseconds(20))
                    }
                })

            let kill = try #require(killedAt.locked { $0 })
            let restart = try #require(restartedAt.locked { $0 })
            let all = reads.locked { $0 }
            let outage = all.filter { $0.at >= kill + .milliseconds(100) && $0.at < restart }
            let others = outage.filter { owner[$0.key] != victim }
            let victims = outage.filter { owner[$0.key] == victim }
            #expect(!others.isEmpty && !victims.isEmpty, "both kinds of keys were read during the outage")
            let othersServed = others.filter { $0.value == "v-" + $0.key }.count
            #expect(othersServed == others.count, "the other servers kept serving: \(othersServed) of \(others.count)")
            #expect(all.allSatisfy { $0.value == nil || $0.value == "v-" + $0.key }, "no read returned another key's value")
            log.expectEveryCallReturnedTypedWithin(.seconds(2))

            let usedAgain = try #require(usedAgainAfter.locked { $0 }, "the restarted server was used again")
            #expect(try await cache.async.get(victimKeys[0]) == "v-" + victimKeys[0])
            Figures.record("memcached: one of three servers killed and restarted under load (64 tasks, 2 threads, 2.5 s outage)", [
                "calls": log.all.count, "outcomes": log.outcomeCounts, "unfinished": log.unfinished,
                "worst_call_ms": ms(log.worstLatency),
                "reads_of_live_servers_keys_during_outage": others.count, "served": othersServed,
                "reads_of_dead_servers_keys_during_outage": victims.count,
                "dead_servers_keys_missed_or_failed": victims.filter { $0.value == nil }.count,
                "restarted_server_used_again_after_ms": ms(usedAgain),
            ])
        }
    }
}
