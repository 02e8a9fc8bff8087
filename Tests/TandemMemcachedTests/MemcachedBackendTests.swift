import Foundation
import Synchronization
@_spi(Backend) @testable import TandemMemcached
import Tandem
import TandemTestSupport
import Testing
@_spi(Backend) import TandemCache

private let serversAvailable = TestServers.shouldRun(!TestServers.memcachedServers.isEmpty)

private func memcachedCache(_ servers: [String], options: [String: SettingValue] = [:], prefix: String = "") throws -> Cache {
    try testCache("memcached", servers, options: options, keyPrefix: prefix, alias: "mc", loop: nil)
}

/// Which of `servers` holds the made key (read on a plain thread, off the cooperative pool).
private func holders(_ servers: [String], _ made: String) async throws -> [String] {
    try await onPlainThread { try servers.filter { try memcachedRawGet($0, made) != nil } }
}

/// `memcachedRawGet` on a plain thread.
private func rawGet(_ server: String, _ key: String) async throws -> String? {
    try await onPlainThread { try memcachedRawGet(server, key) }
}

/// A memcached "stats" counter (read on a plain thread).
private func stat(_ server: String, _ name: String) async throws -> Int {
    try await onPlainThread { try memcachedStat(server, name) }
}

@Suite(.enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)))
struct MemcachedBackendTests {
    @Test(.timeLimit(.minutes(3)))
    func incrOfAnyDeltaIsOneCommandAndAResultPastInt64IsUndone() async throws {
        let server = try ServerProcess(.memcached)  // alone, so that no other test moves its counters
        defer { server.stop() }
        let cache = try memcachedCache([server.address])
        try await cache.async.set("n", 1)
        for (face, delta) in [("async", 5_000_000_000), ("blocking", 7_000_000_000)] {
            let before = try await stat(server.address, "incr_hits")
            if face == "async" {
                _ = try await cache.async.incr("n", by: delta)
            } else {
                _ = try await onPlainThread { try cache.incr("n", by: delta) }
            }
            #expect(try await stat(server.address, "incr_hits") - before == 1, "\(face): a delta above UInt32.max is one incr")
        }
        #expect(try await cache.async.get("n") as Int? == 12_000_000_001)
        // Another client's value near 2^64: a result Tandem cannot return is undone and refused.
        let big = "18446744073709551610"
        let made = cache.makeKey("big")
        let stored = try rawExchange(port: server.port, Array("set \(made) 0 0 \(big.count)\r\n\(big)\r\n".utf8)) { $0.last == 10 }
        #expect(String(decoding: stored, as: UTF8.self) == "STORED\r\n")
        await #expect(throws: CacheError.notAnInteger(key: made)) { try await cache.async.incr("big", by: 1) }
        #expect(try await rawGet(server.address, made) == big, "the value is back where it was")
        await #expect(throws: CacheError.notAnInteger(key: made)) { try await onPlainThread { try cache.incr("big", by: 2) } }
        #expect(try await rawGet(server.address, made) == big, "the blocking face undoes it too")
    }

    @Test(.timeLimit(.minutes(3)))
    func closeReallyClosesAndShutdownEndsTheWorkers() async throws {
        let server = try ServerProcess(.memcached)
        defer { server.stop() }
        let caches = try Caches(settings: ["default": CacheSettings(backend: "memcached", location: [server.address])])
        let cache = caches.default
        /// This test's open connections to its own server (counted on the client side: exact at once).
        func connections() async throws -> Int { try openClientConnections(toPort: server.port) }
        let idle = try await connections()
        #expect(idle == 0)
        try await cache.async.set("k", "v")
        _ = try await cache.async.get("k") as String?
        try await onPlainThread { try cache.set("b", "w") }
        #expect(try await connections() > idle, "both faces connected")
        cache.close()
        #expect(try await eventuallyAsync(30) { (try? await connections()) == idle }, "close() closed every idle connection")
        #expect(try await cache.async.get("k") as String? == "v", "and the cache reconnects")
        await caches.shutdown()
        #expect(try await eventuallyAsync(30) { (try? await connections()) == idle }, "shutdown left no connection open")
        await #expect(throws: CacheError.shutDown("cache 'default'")) { try await cache.async.get("k") as String? }
    }

    @Test func keysSpreadOverAllServersAndStayPut() async throws {
        let servers = TestServers.memcachedServers
        let cache = try memcachedCache(servers, prefix: "spread-\(UUID().uuidString.prefix(8))")
        var perServer: [String: Int] = [:]
        for i in 0..<300 {
            try await cache.async.set("k\(i)", i)
            let h = try await holders(servers, cache.makeKey("k\(i)"))
            #expect(h.count == 1, "key k\(i) is on exactly one server: \(h)")
            if let s = h.first { perServer[s, default: 0] += 1 }
        }
        #expect(perServer.count == 3, "keys landed on all three servers: \(perServer)")
        #expect(perServer.values.allSatisfy { $0 > 30 }, "roughly even: \(perServer)")
        // The same key lands on the same server every time, from either face and a new client.
        let again = try memcachedCache(servers, prefix: cache.makeKey("").components(separatedBy: ":")[0])
        for i in 0..<50 {
            let before = try await holders(servers, cache.makeKey("k\(i)"))
            try await onPlainThread { try again.set("k\(i)", i + 1000) }
            #expect(try await holders(servers, cache.makeKey("k\(i)")) == before)
            #expect(try await cache.async.get("k\(i)") == i + 1000)
        }
    }

    @Test func addingAFourthServerMovesAboutAQuarterOfTheKeys() async throws {
        let procs = try await onPlainThread { try (0..<4).map { _ in try MemcachedProcess() } }
        defer { procs.forEach { $0.stop() } }
        let three = try memcachedCache(procs.prefix(3).map(\.address))
        let four = try memcachedCache(procs.map(\.address))
        let n = 2000
        try await three.async.setMany(Dictionary(uniqueKeysWithValues: (0..<n).map { ("key-\($0)", $0) }))
        let found: [String: Int] = try await four.async.getMany((0..<n).map { "key-\($0)" })
        let moved = Double(n - found.count) / Double(n)
        #expect(moved > 0.12 && moved < 0.40, "ketama moved \(moved * 100)% of the keys (modula would move ~75%)")
    }

    @Test func aKilledServerOnlyLosesItsKeysAndIsUsedAgainAfterRestart() async throws {
        let procs = try await onPlainThread { try (0..<3).map { _ in try MemcachedProcess() } }
        defer { procs.forEach { $0.stop() } }
        let addresses = procs.map(\.address)
        let cache = try memcachedCache(addresses, options: ["RETRY_TIMEOUT": 1, "POLL_TIMEOUT": 3, "CONNECT_TIMEOUT": 3])  // a dead server refuses at once: generous timeouts cost nothing and survive a loaded machine
        let n = 300
        try await cache.async.setMany(Dictionary(uniqueKeysWithValues: (0..<n).map { ("key-\($0)", $0) }))
        let victim = addresses[1]
        let keysOnVictim = try await onPlainThread { try (0..<n).filter { try memcachedRawGet(victim, cache.makeKey("key-\($0)")) != nil } }
        let onVictim = keysOnVictim
        #expect(!onVictim.isEmpty)
        await onPlainThreadIgnoringErrors { procs[1].stop() }

        var served = 0
        var typedFailures = 0
        for i in 0..<n {
            do {
                let v: Int? = try await cache.async.get("key-\(i)")
                if onVictim.contains(i) {
                    #expect(v == nil, "a key of the dead server is a miss, not a wrong value")
                } else if v == i {
                    served += 1
                }
            } catch let e as CacheError {
                switch e.code {
                case .connectionFailed, .timeout, .serverError: typedFailures += 1
                default: Issue.record("unexpected error \(e)")
                }
                #expect(onVictim.contains(i), "only keys of the dead server may fail: key-\(i) \(e)")
            }
        }
        #expect(served == n - onVictim.count, "the other servers kept serving their keys (typed failures: \(typedFailures))")

        try await onPlainThread { try procs[1].start() }
        // After the retry timeout the restarted server is used again: keys that belong to it land there.
        var reused = false
        for attempt in 0..<40 where !reused {
            try await Task.sleep(for: .milliseconds(250))
            for i in onVictim.prefix(20) {
                _ = try? await cache.async.set("key-\(i)", attempt)
                if try await rawGet(victim, cache.makeKey("key-\(i)")) != nil { reused = true; break }
            }
        }
        #expect(reused, "the restarted server receives its keys again")
    }

    @Test func invalidKeysNeverReachTheServer() async throws {
        let proc = try await onPlainThread { try MemcachedProcess() }
        defer { proc.stop() }
        let cache = try memcachedCache([proc.address])
        let setsBefore = try await stat(proc.address, "cmd_set")
        let getsBefore = try await stat(proc.address, "cmd_get")
        let flushesBefore = try await stat(proc.address, "cmd_flush")
        let bad = [String(repeating: "x", count: 251), "with space", "cr\rlf\nflush_all", "nul\u{0}key", "tab\tkey", "del\u{7f}"]
        for key in bad {
            await #expect(throws: CacheError.self) { try await cache.async.set(key, "v") }
            await #expect(throws: CacheError.self) { _ = try await cache.async.get(key) as String? }
            await #expect(throws: CacheError.self) { try await onPlainThread { try cache.set(key, "v") } }
            do {
                try await cache.async.set(key, "v")
            } catch let e as CacheError {
                guard e.code == .invalidKey else { Issue.record("expected invalidKey, got \(e)"); continue }
            }
        }
        #expect(try await stat(proc.address, "cmd_set") == setsBefore)
        #expect(try await stat(proc.address, "cmd_get") == getsBefore)
        #expect(try await stat(proc.address, "cmd_flush") == flushesBefore)
    }

    @Test(arguments: FaceKind.allCases)
    func valuesOverTheItemLimitFailAndRemoveTheOldValue(_ face: FaceKind) async throws {
        let fx = MemcachedFixture()
        let c = try fx.face(face)
        let big = [UInt8](repeating: 7, count: 2 * 1024 * 1024)
        let fits = [UInt8](repeating: 8, count: 900 * 1024)
        try await c.set("big", fits)
        #expect(try await c.get("big", as: [UInt8].self) == fits, "900 KB fits")
        do {
            try await c.set("big", big)
            Issue.record("a 2 MB value was accepted")
        } catch let e as CacheError {
            guard e.code == .valueTooLarge, let size = e.size else { Issue.record("expected valueTooLarge, got \(e)"); return }
            #expect(size == big.count)
        }
        #expect(try await c.get("big", as: [UInt8].self) == nil, "the stale value was deleted")
        try await c.set("small", "s")
        #expect(try await c.setMany(["small": big, "other": fits]).sorted() == ["small"], "set-many reports the failed key")
        #expect(try await c.get("other", as: [UInt8].self) == fits)
    }

    @Test(arguments: TestLoops.Kind.allCases)
    func tenThousandConcurrentAsyncGetsEachGetTheirOwnValueOnTheLoop(_ loop: TestLoops.Kind) async throws {
        // 10,000 requests queue on one connection: the last waits for all the others (30 s, for
        // sanitizer builds on a loaded machine).
        let fx = MemcachedFixture(options: ["POLL_TIMEOUT": 30], loop: loop)
        let cache = try fx.makeCache()
        let n = 10_000
        try await cache.async.setMany(Dictionary(uniqueKeysWithValues: (0..<n).map { ("key-\($0)", "value-\($0)") }))
        let wrong = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<n { group.addTask { try await cache.async.get("key-\(i)") == "value-\(i)" ? 0 : 1 } }
            return try await group.reduce(0, +)
        }
        #expect(wrong == 0, "each waiter got its own value")
        let backend = try #require(cache.backend as? MemcachedBackend)
        #expect(backend.workers == nil && backend.loopClient?.loops.map(ObjectIdentifier.init) == [ObjectIdentifier(fx.loop)], "no worker pool: the async face is on the loop")
    }

    @Test func asyncWorkersWithoutSASLIsRefusedNotIgnored() throws {
        // Without credentials there are no workers: the option would do nothing, so it is an error.
        do {
            _ = try memcachedCache(["127.0.0.1:1"], options: ["ASYNC_WORKERS": 4])
            Issue.record("ASYNC_WORKERS without SASL was accepted")
        } catch let error as CacheError where error.code == .invalidSetting {
            let field = error.field ?? ""
            #expect(field == "OPTIONS.ASYNC_WORKERS")
        }
        _ = try memcachedCache(["127.0.0.1:1"], options: ["ASYNC_WORKERS": 4, "BINARY_PROTOCOL": true, "USERNAME": "u", "PASSWORD": "p"])
    }

    @Test func withSASLCredentialsTheAsyncFaceUsesCoalescingWorkers() async throws {
        // Credentials need the binary protocol; the test server has no SASL, so only the path is checked:
        // the async get goes to a worker (which then fails to authenticate or connect, typed).
        let cache = try memcachedCache(["127.0.0.1:1"], options: ["BINARY_PROTOCOL": true, "USERNAME": "u", "PASSWORD": "p", "CONNECT_TIMEOUT": 0.2])
        let backend = try #require(cache.backend as? MemcachedBackend)
        #expect(backend.loopClient == nil)
        await #expect(throws: CacheError.self) { try await cache.async.get("k") as String? }
        #expect(backend.asyncGetStatistics.gets == 1, "the get went to the worker pool")
        #expect(threadNames().contains { $0.hasPrefix("tandem-memcache") }, "a worker thread runs: \(threadNames())")
    }

    @Test func exhaustedPoolFailsWithATypedErrorAfterItsWholeTimeout() async throws {
        // A server that accepts connections and never answers keeps the only handle busy (for up to
        // POLL_TIMEOUT; the test ends it sooner by closing the connection).
        let (listener, port) = try silentListener()
        defer { close(listener) }
        let cache = try memcachedCache(["127.0.0.1:\(port)"], options: ["POOL_SIZE": 1, "POOL_TIMEOUT": 0.25, "POLL_TIMEOUT": 60, "CONNECT_TIMEOUT": 1])
        let slow = startOnPlainThread { try? cache.get("k") as String? }
        // The first get holds the handle once its connection waits in the listener's queue.
        var pfd = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        #expect(poll(&pfd, 1, 10_000) == 1, "the first get connected")
        // Three times, so that a wait cut short by the wall clock's second boundary (libmemcached's
        // own pool wait ends at time(NULL) + timeout) would show: a lower bound, which load cannot
        // break. On one plain thread, so that no round waits for a turn of the cooperative pool.
        let outcomes = try await onPlainThread {
            (1...3).map { _ -> (Duration, Result<String?, any Error>) in
                let started = ContinuousClock.now
                let result = Result { try cache.get("k") as String? }
                return (ContinuousClock.now - started, result)
            }
        }
        for (round, (waited, result)) in zip(1..., outcomes) {
            switch result {
            case .success:
                Issue.record("round \(round): the second blocking get found a free handle")
            case .failure(let e):
                guard let error = e as? CacheError, error.code == .poolExhausted, let size = error.size else { Issue.record("expected poolExhausted, got \(e)"); continue }
                #expect(size == 1)
                #expect(waited >= .milliseconds(250), "round \(round): gave up after \(waited), before POOL_TIMEOUT")
            }
        }
        // Hang up on the first get so that it ends now, not after POLL_TIMEOUT.
        let accepted = accept(listener, nil, nil)
        if accepted >= 0 { close(accepted) }
        _ = try await slow.value()
    }

    @Test func typeTagsRoundTripThroughTheFlags() async throws {
        let fx = MemcachedFixture()
        let cache = try fx.makeCache()
        try await cache.async.set("i", 42)
        try await cache.async.set("b", true)
        #expect(try await cache.async.get("b") == true)
        let key = cache.makeKey("i")
        let server = try #require(try await onPlainThread { TestServers.memcachedServers.first { (try? memcachedRawGet($0, key)) != nil } })
        #expect(try await rawGet(server, key) == "42", "integers are plain decimal text")
        let (host, port) = try #require(TestServers.hostPort(server))
        let raw = try await onPlainThread {
            String(decoding: try rawExchange(host: host, port: port, Array("get \(key)\r\n".utf8)) { $0.suffix(5) == Array("END\r\n".utf8)[...] }, as: UTF8.self)
        }
        #expect(raw.hasPrefix("VALUE \(cache.makeKey("i")) \(ValueKind.integer.rawValue) 2"), Comment(rawValue: raw))
        #expect(try await onPlainThread { try cache.incr("i", by: 8) } == 50)
        #expect(try await cache.async.decr("i", by: 100) == 0, "memcached never goes below 0")
    }

    @Test(arguments: FaceKind.allCases)
    func saslAuthentication(_ face: FaceKind) async throws {
        let server = try TestServers.need(TestServers.memcachedSASL, "memcached with SASL")
        let good = Face(try memcachedCache([server], options: ["BINARY_PROTOCOL": true, "USERNAME": "tandem", "PASSWORD": "tandem-sasl-pw"]), face)
        try await good.set("sasl-key", "secret value")
        #expect(try await good.get("sasl-key", as: String.self) == "secret value")
        let wrong = Face(try memcachedCache([server], options: ["BINARY_PROTOCOL": true, "USERNAME": "tandem", "PASSWORD": "nope-nope"]), face)
        do {
            try await wrong.set("sasl-key", "x")
            Issue.record("a wrong SASL password was accepted")
        } catch let e as CacheError {
            #expect(!e.description.contains("nope-nope"), "the password is not in the error")
            guard e.code == .authenticationFailed else { Issue.record("expected authenticationFailed, got \(e)"); return }
        }
        #expect(try await good.get("sasl-key", as: String.self) == "secret value", "nothing was overwritten")
    }

    @Test func expirationsOverThirtyDaysAreAbsolute() {
        let now = time(nil)
        #expect(MemcachedOps.expiration(.never) == 0)
        #expect(MemcachedOps.expiration(.after(seconds: 0.2)) == 2, "at least the timeout on a whole-second clock")
        #expect(MemcachedOps.expiration(.after(seconds: 1.5)) == 3)
        #expect(MemcachedOps.expiration(.after(seconds: 60 * 60 * 24 * 30 - 1)) == 60 * 60 * 24 * 30)
        let abs = MemcachedOps.expiration(.after(seconds: 60 * 60 * 24 * 31))
        #expect(abs >= now + 60 * 60 * 24 * 31 && abs < now + 60 * 60 * 24 * 31 + 5)
    }

    @Test func settingsErrors() {
        func error(_ s: CacheSettings) -> String? {
            do { _ = try BackendRegistry.standard.makeCache(alias: "mc", settings: s, loop: nil); return nil } catch { return "\(error)" }
        }
        #expect(error(CacheSettings(backend: "memcached", location: [])).map { $0.contains("LOCATION") } == true)
        #expect(error(CacheSettings(backend: "memcached", location: ["h:port"])).map { $0.contains("LOCATION") } == true)
        #expect(error(CacheSettings(backend: "memcached", location: ["127.0.0.1:11211"], options: ["USERNAME": "u", "PASSWORD": "p"]))
            .map { $0.contains("binary protocol") } == true)
        #expect(error(CacheSettings(backend: "memcached", location: ["127.0.0.1:11211"], options: ["POOL_SIZE": 0])).map { $0.contains("POOL_SIZE") } == true)
        #expect(error(CacheSettings(backend: "django.core.cache.backends.memcached.PyMemcacheCache", location: ["127.0.0.1:11211;127.0.0.1:11212"])) == nil)
        #expect(error(CacheSettings(backend: "memcached", location: ["unix:/tmp/memcached.sock"])) == nil)
    }
}

/// Runs blocking cleanup on a plain thread, ignoring errors.
func onPlainThreadIgnoringErrors(_ body: @escaping @Sendable () -> Void) async {
    _ = try? await onPlainThread { body() }
}

/// Which of `servers` hold each of `keys` (one classic multi-get per 100 keys per server, read on
/// this thread).
private func holdersOf(_ keys: [String], on servers: [ServerProcess]) throws -> [String: [Int]] {
    var out: [String: [Int]] = [:]
    for (i, s) in servers.enumerated() {
        for chunk in stride(from: 0, to: keys.count, by: 100).map({ Array(keys[$0..<min($0 + 100, keys.count)]) }) {
            let reply = try rawExchange(port: s.port, Array("get \(chunk.joined(separator: " "))\r\n".utf8)) {
                $0.count >= 5 && Array($0.suffix(5)) == Array("END\r\n".utf8)
            }
            for line in String(decoding: reply, as: UTF8.self).components(separatedBy: "\r\n") where line.hasPrefix("VALUE ") {
                out[String(line.split(separator: " ")[1]), default: []].append(i)
            }
        }
    }
    return out
}

/// The circuit breaker is per server: with three servers and one dead, calls for the live servers'
/// keys never meet an open breaker, while the dead server's keys soon skip it (issue 29).
@Suite(.enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)))
struct MemcachedBreakerTests {
    @Test(.timeLimit(.minutes(3)), arguments: TestLoops.Kind.allCases)
    func aDeadServerOpensOnlyItsOwnBreaker(_ loop: TestLoops.Kind) async throws {
        let servers = try await onPlainThread { try (0..<3).map { _ in try ServerProcess(.memcached) } }
        defer { servers.forEach { $0.stop() } }
        let cache = try BackendRegistry.standard.makeCache(
            alias: "breakers",
            settings: CacheSettings(backend: "memcached", location: servers.map(\.address), options: [
                "CIRCUIT_BREAKER_THRESHOLD": 3, "CIRCUIT_BREAKER_COOLDOWN": 600, "REMOVE_FAILED_SERVERS": false,
                "CONNECT_TIMEOUT": 1, "POLL_TIMEOUT": 1000,
            ]),
            loop: loop.loop)
        let keys = (0..<90).map { "b\($0)" }
        try await cache.async.setMany(Dictionary(uniqueKeysWithValues: keys.map { ($0, $0) }))
        let holders = try await onPlainThread { try holdersOf(keys.map { cache.makeKey($0) }, on: servers) }
        let deadKeys = keys.filter { holders[cache.makeKey($0)] == [1] }
        let liveKeys = keys.filter { holders[cache.makeKey($0)] == [0] || holders[cache.makeKey($0)] == [2] }
        try #require(deadKeys.count >= 5 && liveKeys.count >= 20, "keys on every server: \(deadKeys.count) dead, \(liveKeys.count) live")
        servers[1].stop()

        let liveFailures = Box(Atomic<Int>(0))
        let liveReads = Box(Atomic<Int>(0))
        var deadOutcomes: [String] = []
        // Rounds in which the dead server's keys fail several times in a row (enough to open a breaker
        // shared by all servers), each followed by the live keys, in both faces.
        for _ in 0..<3 {
            for k in deadKeys.prefix(5) {
                do {
                    _ = try await cache.async.get(k) as String?
                    deadOutcomes.append("ok")
                } catch let e as CacheError {
                    if e.code == .circuitOpen { deadOutcomes.append("open") } else { deadOutcomes.append("failed") }
                }
            }
            for k in liveKeys {
                do {
                    let async: String? = try await cache.async.get(k)
                    let blocking: String? = try await onPlainThread { try cache.get(k) }
                    if async != k || blocking != k { liveFailures.value.add(1, ordering: .relaxed) }
                } catch {
                    Issue.record("a live server's key \(k) failed: \(error)")
                    liveFailures.value.add(1, ordering: .relaxed)
                }
            }
        }
        // Under load: 8 tasks read live keys while one keeps asking for the dead server's keys.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<9 {
                group.addTask {
                    for i in 0..<300 {
                        if t == 8 {
                            _ = try? await cache.async.get(deadKeys[i % deadKeys.count]) as String?
                            continue
                        }
                        let k = liveKeys[(i + t) % liveKeys.count]
                        if (try? await cache.async.get(k) as String?) != k { liveFailures.value.add(1, ordering: .relaxed) }
                        liveReads.value.add(1, ordering: .relaxed)
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(liveFailures.value.load(ordering: .relaxed) == 0, "\(liveFailures.value.load(ordering: .relaxed)) failed reads of live keys out of \(liveReads.value.load(ordering: .relaxed)) concurrent ones")
        #expect(deadOutcomes.prefix(3) == ["failed", "failed", "failed"] && deadOutcomes.dropFirst(3).allSatisfy { $0 == "open" },
                "the dead server's keys failed 3 times, then met its open breaker: \(deadOutcomes)")
    }
}

/// The async face on the loop against servers of the test's own.
@Suite(.enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)))
struct MemcachedLoopFaceTests {
    @Test(.timeLimit(.minutes(3)), arguments: TestLoops.Kind.allCases)
    func bothFacesAgreeOnTheServerOfTenThousandKeys(_ loop: TestLoops.Kind) async throws {
        let servers = try await onPlainThread { try (0..<3).map { _ in try ServerProcess(.memcached) } }
        defer { servers.forEach { $0.stop() } }
        let cache = try BackendRegistry.standard.makeCache(
            alias: "agree", settings: CacheSettings(backend: "memcached", location: servers.map(\.address), options: ["POLL_TIMEOUT": 10]),
            loop: loop.loop)
        let n = 10_000
        let viaAsync = (0..<n).map { "a\($0)" }
        let viaBlocking = (0..<n).map { "b\($0)" }
        try await cache.async.setMany(Dictionary(uniqueKeysWithValues: viaAsync.map { ($0, $0 + "!") }))
        try await onPlainThread { try cache.setMany(Dictionary(uniqueKeysWithValues: viaBlocking.map { ($0, $0 + "!") })) }
        let foundByBlocking: [String: String] = try await onPlainThread { try cache.getMany(viaAsync) }
        let foundByAsync: [String: String] = try await cache.async.getMany(viaBlocking)
        #expect(foundByBlocking.count == n && foundByBlocking.allSatisfy { $0.value == $0.key + "!" }, "the blocking face found \(foundByBlocking.count) of the async face's keys")
        #expect(foundByAsync.count == n && foundByAsync.allSatisfy { $0.value == $0.key + "!" }, "the async face found \(foundByAsync.count) of the blocking face's keys")
        // Each key is on exactly one server, and every server has some.
        let holders = try await onPlainThread { try holdersOf((viaAsync + viaBlocking).map { cache.makeKey($0) }, on: servers) }
        #expect(holders.count == 2 * n && holders.values.allSatisfy { $0.count == 1 }, "every key on exactly one server")
        #expect(Set(holders.values.map { $0[0] }).count == 3)
        // Single-key calls of both faces go to the same server as the batches did.
        for k in viaAsync.prefix(200) {
            #expect(try await cache.async.get(k) == k + "!")
            #expect(try await onPlainThread { try cache.get(k) as String? } == k + "!")
        }
    }

    @Test(.timeLimit(.minutes(3)))
    func aServerSetAsideIsLeftOutTheSameWayByBothFaces() async throws {
        let live = try await onPlainThread { try (0..<2).map { _ in try ServerProcess(.memcached) } }
        defer { live.forEach { $0.stop() } }
        let dead = "127.0.0.1:\(try freeLoopbackPort())"  // nothing listens there
        let cache = try BackendRegistry.standard.makeCache(
            alias: "aside",
            settings: CacheSettings(backend: "memcached", location: [live[0].address, dead, live[1].address],
                                    options: ["RETRY_TIMEOUT": 600, "CONNECT_TIMEOUT": 0.5, "POLL_TIMEOUT": 5]),
            loop: TestLoops.epoll)
        // Each face meets the dead server once (some of these keys are its) and sets it aside.
        var asyncFailures = 0
        var blockingFailures = 0
        for i in 0..<60 {
            do { _ = try await cache.async.get("probe\(i)") as String? } catch { asyncFailures += 1 }
            do { _ = try await onPlainThread { try cache.get("probe\(i)") as String? } } catch { blockingFailures += 1 }
        }
        #expect(asyncFailures >= 1 && blockingFailures >= 1, "both faces met the dead server (\(asyncFailures), \(blockingFailures))")
        // Now every key maps over the two live servers, identically in both faces.
        let keys = (0..<500).map { "k\($0)" }
        try await cache.async.setMany(Dictionary(uniqueKeysWithValues: keys.map { ($0, $0) }))
        let found: [String: String] = try await onPlainThread { try cache.getMany(keys) }
        #expect(found.count == keys.count, "the blocking face found \(found.count) of \(keys.count) keys the async face wrote")
        try await onPlainThread { try cache.setMany(Dictionary(uniqueKeysWithValues: keys.map { ($0, $0 + "'") })) }
        let back: [String: String] = try await cache.async.getMany(keys)
        #expect(back.count == keys.count && back.allSatisfy { $0.value == $0.key + "'" }, "the async face read the blocking face's writes")
    }

    @Test(.timeLimit(.minutes(3)), arguments: TestLoops.Kind.allCases)
    func aHalfWrittenReplyFailsOnlyTheCallsInFlight(_ loop: TestLoops.Kind) async throws {
        // A scripted server: the first connection gets half a value and then silence; later ones
        // answer every request with a miss.
        let (listener, port) = try silentListener()
        defer { close(listener) }
        // The thread says how far it got, so that the test never races it: 1 = waiting for the first
        // connection, 2 = the half reply is sent and it waits for the second.
        let stage = Box(Atomic<Int>(0))
        let served = startOnPlainThread { () -> Int in
            var conns: [Int32] = []
            defer { conns.forEach { close($0) } }
            var buf = [UInt8](repeating: 0, count: 4096)
            var tv = timeval(tv_sec: 60, tv_usec: 0)
            setsockopt(listener, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            stage.value.store(1, ordering: .releasing)
            let first = accept(listener, nil, nil)
            guard first >= 0 else { return 0 }
            conns.append(first)
            _ = recv(first, &buf, buf.count, 0)
            _ = Array("VA 10 f0\r\nabc".utf8).withUnsafeBytes { send(first, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            stage.value.store(2, ordering: .releasing)
            let second = accept(listener, nil, nil)
            guard second >= 0 else { return 1 }
            conns.append(second)
            var answered = 0
            while answered < 3 {
                let n = recv(second, &buf, buf.count, 0)
                if n <= 0 { break }
                let lines = String(decoding: buf[0..<n], as: UTF8.self).components(separatedBy: "\r\n").filter { $0.hasPrefix("mg ") }
                for _ in lines { _ = Array("EN\r\n".utf8).withUnsafeBytes { send(second, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
                answered += lines.count
            }
            return 2
        }
        let cache = try BackendRegistry.standard.makeCache(
            // The stuck calls can only end by the timeout; the later ones are answered by a thread of
            // this test, which a loaded sanitizer build may take seconds to schedule: 5 s.
            alias: "half", settings: CacheSettings(backend: "memcached", location: ["127.0.0.1:\(port)"],
                                                   options: ["POLL_TIMEOUT": 5, "CONNECT_TIMEOUT": 30, "REMOVE_FAILED_SERVERS": false]),
            loop: loop.loop)
        #expect(try await eventually(60) { stage.value.load(ordering: .acquiring) >= 1 }, "the scripted server runs")
        let inFlight = try await withThrowingTaskGroup(of: CacheError?.self) { group in
            for i in 0..<2 {
                group.addTask {
                    do { _ = try await cache.async.get("first\(i)") as String?; return nil } catch let e as CacheError { return e }
                }
            }
            return try await group.reduce(into: [CacheError?]()) { $0.append($1) }
        }
        #expect(inFlight.allSatisfy { $0?.code == .timeout }, "the calls in flight timed out, typed: \(inFlight)")
        // The next calls reconnect and are answered (once the scripted server waits for them).
        #expect(try await eventually(60) { stage.value.load(ordering: .acquiring) >= 2 }, "the half reply was sent")
        for i in 0..<3 {
            #expect(try await cache.async.get("after\(i)") as String? == nil)
        }
        #expect(try await served.value() == 2, "the second connection answered")
    }

    @Test(.timeLimit(.minutes(3)))
    func aStoppedServerFailsItsCallsInFlightAndTheOthersGoOn() async throws {
        let servers = try await onPlainThread { try (0..<2).map { _ in try ServerProcess(.memcached) } }
        defer { servers.forEach { $0.stop() } }
        let cache = try BackendRegistry.standard.makeCache(
            alias: "stop", settings: CacheSettings(backend: "memcached", location: servers.map(\.address),
                                                   options: ["POLL_TIMEOUT": 5, "RETRY_TIMEOUT": 1]),
            loop: TestLoops.epoll)
        let keys = (0..<200).map { "k\($0)" }
        try await cache.async.setMany(Dictionary(uniqueKeysWithValues: keys.map { ($0, $0) }))
        let owner = try await onPlainThread { try holdersOf(keys.map { cache.makeKey($0) }, on: servers) }
        let stoppedKeys = keys.filter { owner[cache.makeKey($0)] == [0] }
        let otherKeys = keys.filter { owner[cache.makeKey($0)] == [1] }
        #expect(!stoppedKeys.isEmpty && !otherKeys.isEmpty)
        servers[0].pause(true)
        // A batch of gets on both servers: those of the stopped one time out (at 5 s, so that a loaded
        // machine cannot time out the others), the others are served.
        let results = try await withThrowingTaskGroup(of: (String, Result<String?, CacheError>).self) { group in
            for k in stoppedKeys.prefix(20) + otherKeys.prefix(20) {
                group.addTask {
                    do { return (k, .success(try await cache.async.get(k))) } catch let e as CacheError { return (k, .failure(e)) }
                }
            }
            return try await group.reduce(into: [String: Result<String?, CacheError>]()) { $0[$1.0] = $1.1 }
        }
        servers[0].pause(false)
        for k in otherKeys.prefix(20) {
            #expect(results[k] == .success(k), "\(k) on the running server was served")
        }
        for k in stoppedKeys.prefix(20) {
            guard case .failure(let e) = results[k] else { Issue.record("\(k) on the stopped server: \(String(describing: results[k]))"); continue }
            switch e.code {
            case .timeout, .connectionFailed: break
            default: Issue.record("\(k): expected a timeout, got \(e)")
            }
        }
        // After the retry timeout the resumed server is used again and still has its keys.
        #expect(try await eventuallyAsync(30) { (try? await cache.async.get(stoppedKeys[0]) as String?) == stoppedKeys[0] })
    }
}

/// A memcached cache on a loop group: on each loop a connection per server, each caller served by its
/// own loop's connections.
@Suite(.enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)))
struct MemcachedLoopGroupTests {
    @Test func eachLoopHasItsConnectionsAndCallersUseTheirOwnLoops() async throws {
        let group = TandemEventLoopGroup(loops: [EpollEventLoop(name: "mc-group-e"), DispatchEventLoop(name: "mc-group-d")])
        defer { group.shutdown() }
        let servers = TestServers.memcachedServers
        try #require(!servers.isEmpty, "memcached servers are not configured: \(TestServers.skipMessage)")
        let cache = try Caches(settings: ["default": CacheSettings(backend: "memcached", location: servers, keyPrefix: "group-\(UUID().uuidString)",
                                                                   options: ["POLL_TIMEOUT": 10])],
                               loopGroup: group).default
        let client = try #require((cache.backend as? MemcachedBackend)?.loopClient)
        #expect(client.loops.map(ObjectIdentifier.init) == group.loops.map(ObjectIdentifier.init), "one set of connections per loop, in order")
        for (i, loop) in group.loops.enumerated() {
            let served = try await withLoopPromise(on: loop) { (p: LoopPromise<[Bool]>) in
                p.succeed((0..<4).map { _ in
                    let next = client.next
                    return next.loop === loop && next.connections.count == servers.count && next.connections.allSatisfy { $0.loop === loop }
                })
            }
            #expect(served == [true, true, true, true], "a caller on loop \(i) is served by that loop's connections")
        }
        // Off the loops (each cooperative thread on the loop it was given): every caller gets its own value back.
        let keys = (0..<400).map { "k\($0)" }
        #expect(try await tasksNotReadingTheirOwnWrites(cache, keys) == 0)
        let many = try await cache.async.getMany(keys) as [String: String]
        #expect(many.count == 400 && many["k7"] == "v-k7", "a many-key get on one loop's connections finds what both loops wrote")
        let blockingRead = try await onPlainThread { () throws -> [String: String] in try cache.getMany(keys) }
        #expect(blockingRead.count == 400 && blockingRead["k7"] == "v-k7", "the blocking face reads what both loops' connections wrote")
        try await cache.async.deleteMany(keys)
        #expect(try await cache.async.getMany(keys) as [String: String] == [:])
    }
}
