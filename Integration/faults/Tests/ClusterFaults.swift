import Foundation
import Synchronization
import Tandem
import TandemTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension Faults {
    /// Redis Cluster under change, on the test command's six-node cluster: clear, a slot migrated
    /// under load, a primary killed under load (last: it leaves the cluster with a promoted replica).
    @Suite(.serialized) struct ClusterFaults {
        static let timeouts: [String: SettingValue] = ["COMMAND_TIMEOUT": 1, "CONNECT_TIMEOUT": 1, "POOL_TIMEOUT": 2]
        static let callBound: Duration = .seconds(10)

        /// One line of CLUSTER NODES: a node's id, port, whether it is a primary, and its slot ranges.
        struct Node {
            let id: String
            let port: Int
            let primary: Bool
            /// The id of a replica's primary ("-" for a primary).
            let primaryID: String
            let failed: Bool
            let slots: [ClosedRange<Int>]
        }

        static func nodes() throws -> [Node] {
            let seeds = try TestServers.need(TestServers.redisCluster, "Redis Cluster").split(separator: ",")
            var lastError: (any Error)?
            for seed in seeds {
                guard let port = TestServers.hostPort(String(seed))?.1 else { continue }
                do {
                    let text = try RawRedis(port: port).command(["CLUSTER", "NODES"]).dropFirst()  // "$..."
                    return text.split(separator: "\n").compactMap { line in
                        let f = line.split(separator: " ")
                        guard f.count >= 8, let colon = f[1].firstIndex(of: ":") else { return nil }
                        let portText = f[1][f[1].index(after: colon)...].prefix { $0.isNumber }
                        let slots = f.dropFirst(8).compactMap { r -> ClosedRange<Int>? in
                            let parts = r.split(separator: "-")
                            guard let a = Int(parts[0]) else { return nil }
                            return a...(parts.count > 1 ? Int(parts[1]) ?? a : a)
                        }
                        return Node(id: String(f[0]), port: Int(portText) ?? 0, primary: f[2].contains("master"),
                                    primaryID: String(f[3]), failed: f[2].contains("fail"), slots: slots)
                    }
                } catch {
                    lastError = error
                }
            }
            throw lastError ?? CheckFailure(message: "no cluster node answered", location: "ClusterFaults")
        }

        static func cache() throws -> Cache {
            let nodes = try TestServers.need(TestServers.redisCluster, "Redis Cluster")
            return try Caches(settings: ["default": CacheSettings(backend: "redis", location: ["redis+cluster://\(nodes)"], options: timeouts)]).default
        }

        @Test(arguments: FaceKind.allCases)
        func clearFlushesEveryPrimary(_ face: FaceKind) async throws {
            let f = Face(try Self.cache(), face)
            let keys = (0..<200).map { "clear-\(face)-\($0)" }
            _ = try await f.setMany(Dictionary(uniqueKeysWithValues: keys.map { ($0, 1) }))
            let primaries = try await onPlainThread { try Self.nodes().filter { $0.primary && !$0.failed } }
            let sizes = try await onPlainThread { try primaries.map { try RawRedis(port: $0.port).command(["DBSIZE"]) } }
            #expect(sizes.filter { $0 != ":0" }.count == 3, "keys on all three primaries before: \(sizes)")
            try await f.clear()
            let after = try await onPlainThread { try primaries.map { try RawRedis(port: $0.port).command(["DBSIZE"]) } }
            #expect(after == [":0", ":0", ":0"], "every primary empty: \(after)")
        }

        @Test(.timeLimit(.minutes(2)))
        func slotMigratedUnderLoadLosesAndMisroutesNothing() async throws {
            let cache = try Self.cache()
            // Every key of the load shares one slot (a hash tag), the slot that is moved.
            let tag = "{migrating}"
            let slot = clusterKeySlot(":1:" + tag)  // the made key is ":1:{migrating}-..."; the tag decides
            let before = try await onPlainThread { try Self.nodes() }
            let source = try #require(before.first { $0.primary && $0.slots.contains { $0.contains(slot) } })
            let target = try #require(before.first { $0.primary && $0.id != source.id })
            for i in 0..<200 { try await cache.async.set("\(tag)-pre-\(i)", "pre-\(i)") }
            let log = CallLog()
            let acknowledged = Mutex<[String]>([])
            let wrongBox = Box(Atomic<Int>(0))
            let movedKeys = Box(Atomic<Int>(0))
            try await underLoad(
                duration: .seconds(8), tasks: 32, threads: 2,
                asyncCall: { w, i in
                    await log.run("async") {
                        let key = "\(tag)-a-\(w)-\(i)"
                        try await cache.async.set(key, key)
                        acknowledged.locked { $0.append(key) }
                        if let v: String = try await cache.async.get(key), v != key { wrongBox.value.add(1, ordering: .relaxed) }
                    }
                },
                blockingCall: { t, i in
                    log.run("blocking") {
                        let key = "\(tag)-b-\(t)-\(i)"
                        try cache.set(key, key)
                        acknowledged.locked { $0.append(key) }
                        if let v: String = try cache.get(key), v != key { wrongBox.value.add(1, ordering: .relaxed) }
                    }
                },
                script: {
                    try await Task.sleep(for: .seconds(1))
                    // What redis-cli --cluster reshard does for one slot.
                    try await onPlainThread {
                        let src = try RawRedis(port: source.port)
                        let dst = try RawRedis(port: target.port)
                        _ = try dst.command(["CLUSTER", "SETSLOT", String(slot), "IMPORTING", source.id])
                        _ = try src.command(["CLUSTER", "SETSLOT", String(slot), "MIGRATING", target.id])
                        while true {
                            let listed = try src.command(["CLUSTER", "GETKEYSINSLOT", String(slot), "50"])
                            let keys = listed.split(separator: " ").dropFirst().map { String($0.dropFirst()) }
                            if keys.isEmpty { break }
                            let answer = try src.command(["MIGRATE", "127.0.0.1", String(target.port), "", "0", "5000", "KEYS"] + keys)
                            guard answer.hasPrefix("+") else { throw CheckFailure(message: "MIGRATE answered \(answer)", location: "reshard") }
                            movedKeys.value.add(keys.count, ordering: .relaxed)
                        }
                        for n in try Self.nodes() where n.primary && !n.failed {
                            _ = try RawRedis(port: n.port).command(["CLUSTER", "SETSLOT", String(slot), "NODE", target.id])
                        }
                    }
                })
            let after = try await onPlainThread { try Self.nodes() }
            #expect(after.first { $0.id == target.id }?.slots.contains { $0.contains(slot) } == true, "the slot moved to the target")
            log.expectEveryCallReturnedTypedWithin(Self.callBound)
            #expect(wrongBox.value.load(ordering: .relaxed) == 0, "no read returned another key's value")
            let failures = log.all.filter { $0.outcome != .ok }.count
            // Every acknowledged write is there, on the slot's new node.
            let written = acknowledged.locked { $0 } + (0..<200).map { "\(tag)-pre-\($0)" }
            var lost = 0
            for chunk in stride(from: 0, to: written.count, by: 500).map({ Array(written[$0..<min($0 + 500, written.count)]) }) {
                let found: [String: String] = try await cache.async.getMany(chunk)
                lost += chunk.filter { found[$0] == nil }.count
            }
            #expect(lost == 0, "\(lost) acknowledged writes lost")
            Figures.record("redis cluster slot migrated under load (32 tasks, 2 threads, MIGRATING/IMPORTING/MIGRATE)", [
                "calls": log.all.count, "outcomes": log.outcomeCounts, "failed_calls": failures, "unfinished": log.unfinished,
                "worst_call_ms": ms(log.worstLatency), "keys_migrated": movedKeys.value.load(ordering: .relaxed),
                "acknowledged_writes": written.count, "acknowledged_writes_lost": lost,
                "wrong_values": wrongBox.value.load(ordering: .relaxed),
            ])
        }


        /// `READ_FROM_REPLICAS` with a replica killed (SIGKILL) under reads of its primary's slots: every
        /// read is answered, by the primary, while the replica is gone; once it is started again and in
        /// sync, reads reach it again.
        @Test(.timeLimit(.minutes(3)))
        func replicaKilledUnderReadsSendsThemToItsPrimaryUntilItIsBack() async throws {
            let seeds = try TestServers.need(TestServers.redisCluster, "Redis Cluster")
            let nodes = try await onPlainThread { try Self.nodes() }
            let primaries = Dictionary(nodes.filter { $0.primary && !$0.failed && !$0.slots.isEmpty }.map { ($0.id, $0) }) { a, _ in a }
            let victim = try #require(nodes.first { !$0.primary && !$0.failed && primaries[$0.primaryID] != nil }, "a live replica of a live primary")
            let primary = try #require(primaries[victim.primaryID])
            let daemon = try await onPlainThread { try RedisDaemon(port: victim.port) }
            let cache = try Caches(settings: ["default": CacheSettings(
                backend: "redis", location: ["redis+cluster://\(seeds)"],
                options: Self.timeouts.merging(["READ_FROM_REPLICAS": true]) { $1 })]).default
            // 64 keys in the primary's slots (the made key is ":1:<key>").
            let keys: [String] = Array((0..<100_000).lazy.map { "replica-kill-\($0)" }
                .filter { key in primary.slots.contains { $0.contains(clusterKeySlot(":1:" + key)) } }.prefix(64))
            try await cache.async.setMany(Dictionary(uniqueKeysWithValues: keys.map { ($0, "value of \($0)") }))
            @Sendable func onReplica() async -> Int { (try? await SentinelServers.getsAnswered(port: victim.port)) ?? 0 }
            // Replication is asynchronous, and a cluster lists a replica some time after it joined:
            // wait until reads of these keys reach the replica and find every value.
            let reaching = try await eventuallyAsync(30) {
                let before = await onReplica()
                let found: [String: String] = (try? await cache.async.getMany(keys)) ?? [:]
                let after = await onReplica()
                return found.count == keys.count && after - before >= keys.count
            }
            try #require(reaching, "reads of the primary's slots never reached its replica")

            let log = CallLog()
            let killedAt = Mutex<ContinuousClock.Instant?>(nil)
            try await underReadLoad(cache, keys: keys, log: log, duration: .seconds(8), tasks: 32, threads: 2,
                script: {
                    try await Task.sleep(for: .seconds(2))
                    killedAt.locked { $0 = .now }
                    #expect(kill(daemon.pid, SIGKILL) == 0, "the replica was killed")
                })
            let killed = try #require(killedAt.locked { $0 })
            log.expectEveryCallReturnedTypedWithin(Self.callBound)
            // Reads are idempotent: one that met the dead replica went to the primary instead of failing.
            let failed = log.all.filter { $0.outcome != .ok }.count
            #expect(failed == 0, "no read failed: \(log.outcomeCounts)")
            let afterKill = log.all.filter { $0.start >= killed && $0.outcome == .ok }.count
            #expect(afterKill > 0, "reads were served after the kill")

            // Back: started again on its port with its nodes file, it copies its primary; reads reach it.
            try await onPlainThread { try daemon.restart() }
            let restarted = ContinuousClock.now
            let synced = try await eventuallyAsync(30) {
                let info = (try? await onPlainThread { try RawRedis(port: victim.port).command(["INFO", "replication"]) }) ?? ""
                return info.contains("master_link_status:up")
            }
            #expect(synced, "the restarted replica copied its primary")
            let back = try await eventuallyAsync(30) {
                let before = await onReplica()
                for key in keys.prefix(16) where (try? await cache.async.get(key) as String?) != "value of \(key)" { return false }
                for key in keys.prefix(16) where (try? await onPlainThread { try cache.get(key) as String? }) != "value of \(key)" { return false }
                let after = await onReplica()
                return after - before >= 32
            }
            #expect(back, "reads reached the replica again after its restart")
            let backAfter = ContinuousClock.now - restarted
            try await cache.async.deleteMany(keys)
            Figures.record("redis cluster replica killed under reads (READ_FROM_REPLICAS, 32 tasks, 2 threads, SIGKILL, restarted)", [
                "calls": log.all.count, "outcomes": log.outcomeCounts, "unfinished": log.unfinished,
                "worst_call_ms": ms(log.worstLatency), "reads_after_kill": afterKill,
                "reads_on_replica_again_after_restart_ms": ms(backAfter),
            ])
        }

        @Test(.timeLimit(.minutes(3)))
        func primaryKilledUnderLoadFailsOverToItsReplica() async throws {
            let cache = try Self.cache()
            let before = try await onPlainThread { try Self.nodes() }
            // A primary with a live replica to promote (an earlier test may have killed a replica).
            let victim = try #require(before.first { p in
                p.primary && !p.failed && !p.slots.isEmpty && before.contains { !$0.primary && !$0.failed && $0.primaryID == p.id }
            })
            let victimSlots = victim.slots
            let info = try await onPlainThread { try RawRedis(port: victim.port).command(["INFO", "server"]) }
            let pidLine = info.split(whereSeparator: { $0.isNewline || $0 == " " }).first { $0.hasPrefix("process_id:") }
            let pid = try #require(pidLine.flatMap { Int32($0.dropFirst("process_id:".count)) }, "no process_id in INFO: \(info.prefix(300))")
            let log = CallLog()
            let acknowledged = Mutex<[(key: String, at: ContinuousClock.Instant)]>([])
            let killedAt = Mutex<ContinuousClock.Instant?>(nil)
            let promotedAt = Mutex<ContinuousClock.Instant?>(nil)
            /// Whether a key lives in the killed primary's slots.
            @Sendable func onVictim(_ key: String) -> Bool {
                let slot = clusterKeySlot(":1:" + key)
                return victimSlots.contains { $0.contains(slot) }
            }
            try await underLoad(
                duration: .seconds(14), tasks: 64, threads: 4,
                asyncCall: { w, i in
                    let key = "kill-a-\(w)-\(i)"
                    await log.run(onVictim(key) ? "async-victim" : "async") {
                        try await cache.async.set(key, key)
                        acknowledged.locked { $0.append((key, .now)) }
                    }
                },
                blockingCall: { t, i in
                    let key = "kill-b-\(t)-\(i)"
                    log.run(onVictim(key) ? "blocking-victim" : "blocking") {
                        try cache.set(key, key)
                        acknowledged.locked { $0.append((key, .now)) }
                    }
                },
                script: {
                    try await Task.sleep(for: .seconds(2))
                    killedAt.locked { $0 = .now }
                    kill(pid, SIGKILL)
                    let promoted = try await eventuallyAsync(30) {
                        let nodes = (try? await onPlainThread { try Self.nodes() }) ?? []
                        return nodes.contains { $0.primary && !$0.failed && $0.id != victim.id && $0.slots == victimSlots }
                    }
                    #expect(promoted, "the victim's replica took over its slots")
                    promotedAt.locked { $0 = .now }
                })
            let killed = try #require(killedAt.locked { $0 })
            let promoted = try #require(promotedAt.locked { $0 })
            log.expectEveryCallReturnedTypedWithin(Self.callBound)
            let otherFailures = log.all.filter { ($0.face == "async" || $0.face == "blocking") && $0.outcome != .ok }.count
            let asyncRecovery = try #require(log.firstSuccess(of: "async-victim", after: promoted), "the victim's slots work again (async)")
            let blockingRecovery = try #require(log.firstSuccess(of: "blocking-victim", after: promoted), "the victim's slots work again (blocking)")
            let writes = acknowledged.locked { $0 }
            var lost: [(key: String, at: ContinuousClock.Instant)] = []
            for chunk in stride(from: 0, to: writes.count, by: 500).map({ Array(writes[$0..<min($0 + 500, writes.count)]) }) {
                let found: [String: String] = try await cache.async.getMany(chunk.map(\.key))
                lost += chunk.filter { found[$0.key] == nil }
            }
            let outside = lost.filter { $0.at < killed - .seconds(1) || !onVictim($0.key) }
            #expect(outside.count == 0, "\(outside.count) writes lost outside the victim's slots or long before the kill")
            Figures.record("redis cluster primary killed under load (64 tasks, 4 threads, SIGKILL, replica promoted)", [
                "calls": log.all.count, "outcomes": log.outcomeCounts, "unfinished": log.unfinished,
                "worst_call_ms": ms(log.worstLatency), "promoted_after_ms": ms(promoted - killed),
                "failed_calls_on_other_primaries": otherFailures,
                "async_first_success_after_promotion_ms": ms(asyncRecovery),
                "blocking_first_success_after_promotion_ms": ms(blockingRecovery),
                "acknowledged_writes": writes.count, "acknowledged_writes_lost": lost.count,
            ])
        }
    }
}
