import Foundation
import Synchronization
import Tandem
import TandemTestSupport
import Testing
@_spi(Backend) import TandemCache

private let serversAvailable = TestServers.shouldRun(TestServers.redisURL != nil && !TestServers.memcachedServers.isEmpty)

/// A producer that counts its runs and holds the flight open until the test lets it finish.
final class HeldProducer: Sendable {
    let runs = Atomic<Int>(0)
    private let released = Atomic<Bool>(false)
    func release() { released.store(true, ordering: .releasing) }

    func produce() async throws -> String {
        runs.add(1, ordering: .relaxed)
        while !released.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(1)) }
        return "computed"
    }

    func produceBlocking() -> String {
        runs.add(1, ordering: .relaxed)
        while !released.load(ordering: .acquiring) { usleep(1000) }
        return "computed"
    }
}

struct ProducerFailed: Error, Equatable {}

/// Single flight for `getOrSet`, beyond the shared suite: a thousand callers, both faces sharing one
/// flight, a shared error, and a cancelled leader.
@Suite struct SingleFlightTests {
    static func caches(_ backend: String) throws -> Cache {
        switch backend {
        case "redis": return try RedisFixture(loop: .epoll).makeCache { $0.keyPrefix = "sf-\(UUID().uuidString.prefix(8))" }
        case "memcached": return try MemcachedFixture().makeCache { $0.keyPrefix = "sf\(UUID().uuidString.prefix(8))" }
        default: return try Caches(settings: ["default": CacheSettings(backend: "locmem", location: ["sf-\(UUID().uuidString)"])]).default
        }
    }

    /// 1,000 async callers and 20 blocking ones (on threads of their own) of one cold key.
    static func thousandCallers(_ cache: Cache) async throws {
        let producer = HeldProducer()
        let values = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<1000 {
                group.addTask { try await cache.async.getOrSet("cold") { try await producer.produce() } }
            }
            let blocking = (0..<20).map { _ in startOnPlainThread { try cache.getOrSet("cold") { producer.produceBlocking() } } }
            // Everyone has arrived once the producer has started and nobody else has: release it.
            #expect(try await eventually { producer.runs.load(ordering: .relaxed) == 1 })
            try await Task.sleep(for: .milliseconds(100))
            producer.release()
            var out: [String] = []
            for try await v in group { out.append(v) }
            for b in blocking { out.append(try await b.value()) }
            return out
        }
        #expect(values.count == 1020 && values.allSatisfy { $0 == "computed" })
        #expect(producer.runs.load(ordering: .relaxed) == 1, "the producer ran once for 1,020 callers in both faces")
    }

    @Test(.timeLimit(.minutes(3)))
    func aThousandCallersOfAColdKeyRunTheProducerOnceOnLocMem() async throws {
        try await SingleFlightTests.thousandCallers(try SingleFlightTests.caches("locmem"))
    }

    @Test(.timeLimit(.minutes(3)), .enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)),
          arguments: ["redis", "memcached"])
    func aThousandCallersOfAColdKeyRunTheProducerOnceOnAServer(_ backend: String) async throws {
        try await SingleFlightTests.thousandCallers(try SingleFlightTests.caches(backend))
    }

    @Test(.timeLimit(.minutes(3)))
    func waitersShareTheLeadersErrorAndTheNextCallComputesAgain() async throws {
        let cache = try SingleFlightTests.caches("locmem")
        let runs = Box(Atomic<Int>(0))
        let gate = HeldProducer()
        let results = await withTaskGroup(of: Result<String, any Error>.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    do {
                        return .success(try await cache.async.getOrSet("failing") { () async throws -> String in
                            runs.value.add(1, ordering: .relaxed)
                            _ = try await gate.produce()
                            throw ProducerFailed()
                        })
                    } catch {
                        return .failure(error)
                    }
                }
            }
            _ = try? await eventually { runs.value.load(ordering: .relaxed) == 1 }
            try? await Task.sleep(for: .milliseconds(50))
            gate.release()
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(runs.value.load(ordering: .relaxed) == 1)
        #expect(results.allSatisfy { if case .failure(let e) = $0 { return e is ProducerFailed } else { return false } },
                "all 50 callers got the producer's error")
        #expect(try await cache.async.getOrSet("failing") { "second" } == "second", "an error is not cached")
    }

    @Test(.timeLimit(.minutes(3)))
    func aCancelledLeaderFailsOnlyItself() async throws {
        let cache = try SingleFlightTests.caches("locmem")
        let leaderStarted = Box(Atomic<Bool>(false))
        let leader = Task {
            try await cache.async.getOrSet("k") { () async throws -> String in
                leaderStarted.value.store(true, ordering: .releasing)
                try await Task.sleep(for: .seconds(60))  // until cancelled
                return "leader"
            }
        }
        #expect(try await eventually { leaderStarted.value.load(ordering: .acquiring) })
        let waiters = (0..<10).map { _ in Task { try await cache.async.getOrSet("k") { "waiter" } } }
        try await Task.sleep(for: .milliseconds(50))
        leader.cancel()
        await #expect(throws: CancellationError.self) { try await leader.value }
        for w in waiters { #expect(try await w.value == "waiter", "a waiter took over and computed") }
        #expect(try await cache.async.get("k") as String? == "waiter")

        // A waiter cancelled while it waits stops waiting at once; the flight goes on.
        let held = HeldProducer()
        let lead2 = Task { try await cache.async.getOrSet("k2") { try await held.produce() } }
        #expect(try await eventually { held.runs.load(ordering: .relaxed) == 1 })
        let waiter = Task { try await cache.async.getOrSet("k2") { "never" } }
        try await Task.sleep(for: .milliseconds(20))
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        held.release()
        #expect(try await lead2.value == "computed")
    }
}

/// XFetch early refresh: one caller recomputes a live value while the others keep getting it.
@Suite struct EarlyRefreshTests {
    /// Stores "old" through getOrSet (so that the metadata is written), then sends 50 callers whose
    /// early-refresh test always passes (beta = infinity): one recomputes (held until the other 49 have
    /// their answers), the others get "old" at once.
    static func oneCallerRefreshes(_ cache: Cache, blocking: Bool) async throws {
        let first: String = try await cache.async.getOrSet("hot", timeout: .seconds(60), earlyRefresh: .infinity) {
            try await Task.sleep(for: .milliseconds(5))  // a computation that takes time: delta > 0
            return "old"
        }
        #expect(first == "old")
        let producer = HeldProducer()
        let answered = Box(Atomic<Int>(0))
        let results = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    let v: String
                    // Counted where the answer arrives (on the caller's thread in the blocking case), so
                    // that the count does not wait for a turn of the cooperative pool, which the other
                    // suites running at once keep busy (seconds, under ThreadSanitizer).
                    if blocking {
                        v = try await onPlainThread {
                            let v = try cache.getOrSet("hot", timeout: .seconds(60), earlyRefresh: .infinity) { producer.produceBlocking() }
                            answered.value.add(1, ordering: .relaxed)
                            return v
                        }
                    } else {
                        v = try await cache.async.getOrSet("hot", timeout: .seconds(60), earlyRefresh: .infinity) { try await producer.produce() }
                        answered.value.add(1, ordering: .relaxed)
                    }
                    return v
                }
            }
            // Bounded generously: under ThreadSanitizer, with every suite running at once, 30 s was missed twice.
            #expect(try await eventually(120) { answered.value.load(ordering: .relaxed) == 49 && producer.runs.load(ordering: .relaxed) == 1 })
            producer.release()
            return try await group.reduce(into: [String]()) { $0.append($1) }
        }
        #expect(results.filter { $0 == "old" }.count == 49, "the others got the live value at once: \(results)")
        #expect(results.filter { $0 == "computed" }.count == 1, "one caller refreshed it")
        #expect(producer.runs.load(ordering: .relaxed) == 1)
        #expect(try await cache.async.get("hot") as String? == "computed", "the refreshed value is stored")
        // Without early refresh the live value is simply served.
        #expect(try await cache.async.getOrSet("hot", timeout: .seconds(60)) { "never" } == "computed")
    }

    @Test(.timeLimit(.minutes(3)), arguments: [false, true])
    func oneCallerRefreshesALiveValueOnLocMem(_ blocking: Bool) async throws {
        try await EarlyRefreshTests.oneCallerRefreshes(try SingleFlightTests.caches("locmem"), blocking: blocking)
    }

    @Test(.timeLimit(.minutes(3)), .enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)))
    func oneCallerRefreshesALiveValueOnRedis() async throws {
        try await EarlyRefreshTests.oneCallerRefreshes(try SingleFlightTests.caches("redis"), blocking: false)
    }

    @Test func theSettingIsCheckedAndAValueWithoutMetadataIsNeverRefreshed() async throws {
        #expect(throws: CacheError.self) {
            try Caches(settings: ["default": CacheSettings(backend: "locmem", options: ["EARLY_REFRESH_BETA": "soon"])])
        }
        #expect(throws: CacheError.self) {
            try Caches(settings: ["default": CacheSettings(backend: "locmem", options: ["EARLY_REFRESH_BETA": -1])])
        }
        let cache = try Caches(settings: ["default": CacheSettings(backend: "locmem", location: ["xf-\(UUID())"],
                                                                options: ["EARLY_REFRESH_BETA": 1000])]).default
        try await cache.async.set("plain", "set directly")  // no metadata beside it
        for _ in 0..<20 {
            #expect(try await cache.async.getOrSet("plain") { "recomputed" } == "set directly")
        }
    }
}

/// The stampede lock is released only by its holder (issue 29): a holder whose computation outlived
/// the lock's timeout, while another caller took the lock, leaves that caller's lock alone.
@Suite struct StampedeLockOwnershipTests {
    static func overrunLeavesTheNextHoldersLock(_ backend: String, _ face: FaceKind) async throws {
        let cache = try SingleFlightTests.caches(backend)
        let lockKey = cache.makeKey("slow") + ":tandem-lock"
        let other = StoredValue(bytes: Array("locked-by-the-next-holder".utf8), kind: .string)
        // The producer overruns: meanwhile its lock expired and the next caller took it (written
        // straight to the backend, as that caller's add would).
        switch face {
        case .async:
            let v = try await cache.async.getOrSet("slow", lock: true) { () async throws -> String in
                _ = try await cache.backend.asyncSet(lockKey, other, expiry: .after(seconds: 60), mode: .set)
                return "v"
            }
            #expect(v == "v")
        case .blocking:
            let v = try await onPlainThread {
                try cache.getOrSet("slow", lock: true) { () throws -> String in
                    _ = try cache.backend.set(lockKey, other, expiry: .after(seconds: 60), mode: .set)
                    return "v"
                }
            }
            #expect(v == "v")
        }
        let left = try await cache.backend.asyncGet(lockKey)
        #expect(left?.bytes == other.bytes, "the next holder's lock is still there: \(String(describing: left))")
        // A holder that finishes in time releases its own lock.
        let fastLock = cache.makeKey("fast") + ":tandem-lock"
        switch face {
        case .async: _ = try await cache.async.getOrSet("fast", lock: true) { "v" }
        case .blocking: _ = try await onPlainThread { try cache.getOrSet("fast", lock: true) { "v" } }
        }
        #expect(try await cache.backend.asyncGet(fastLock) == nil, "the holder's own lock was released")
    }

    @Test(.timeLimit(.minutes(2)), arguments: FaceKind.allCases)
    func onLocMem(_ face: FaceKind) async throws {
        try await StampedeLockOwnershipTests.overrunLeavesTheNextHoldersLock("locmem", face)
    }

    @Test(.timeLimit(.minutes(2)), .enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)),
          arguments: ["redis", "memcached"], FaceKind.allCases)
    func onAServer(_ backend: String, _ face: FaceKind) async throws {
        try await StampedeLockOwnershipTests.overrunLeavesTheNextHoldersLock(backend, face)
    }
}
