import Foundation
import Synchronization
import Tandem
import TandemTestSupport
import Testing
@_spi(Backend) import TandemCache

private let serversAvailable = TestServers.shouldRun(TestServers.redisURL != nil)

/// RESP for a command whose arguments are raw bytes.
private func resp(_ args: [[UInt8]]) -> [UInt8] { RESPCommand.encode(args) }

/// Addresses, values, shutdowns: the defects of the robustness issue, each on both loops.
@Suite(.enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)))
struct RedisRobustnessTests {
    @Test(arguments: TestLoops.Kind.allCases)
    func noValueAnotherClientStoresReadsAsAStoredNil(_ loop: TestLoops.Kind) async throws {
        let fx = RedisFixture(loop: loop)
        let cache = try fx.makeCache { $0.keyPrefix = "nul" }
        // The bytes that used to mean "stored nil", and the marker itself, written by another client.
        let foreign: [[UInt8]] = [[0xC1, 0x00, 0x4E], [0xC1, 0x00, 0x4E, 0x00], [0xC1]]
        for (i, bytes) in foreign.enumerated() {
            let select = resp([Array("SELECT".utf8), Array(String(fx.db).utf8)])
            let set = resp([Array("SET".utf8), Array("nul:1:f\(i)".utf8), bytes])
            let reply = try rawExchange(port: fx.port, select + set) { String(decoding: $0, as: UTF8.self).components(separatedBy: "+OK").count == 3 }
            #expect(String(decoding: reply, as: UTF8.self) == "+OK\r\n+OK\r\n")
            #expect(try await cache.async.get("f\(i)") as [UInt8]? == bytes, "another client's \(bytes) reads back as itself")
            let blocking: [UInt8]?? = try await onPlainThread { try cache.get("f\(i)") as [UInt8]?? }
            #expect(blocking == .some(.some(bytes)), "asked for [UInt8]?, the value is a value, not a stored nil")
        }
        // Tandem's own: nil is a stored nil; a value equal to the marker (or the marker and 0xFF bytes)
        // round-trips as that value, in both faces.
        let marker = StoredValue.nullBytes
        for value in [marker, marker + [0xFF], marker + [0xFF, 0xFF], [0xC1, 0x00, 0x4E]] {
            try await cache.async.set("own", value)
            #expect(try await cache.async.get("own") as [UInt8]?? == .some(.some(value)))
            try await onPlainThread { try cache.set("own2", value) }
            #expect(try await cache.async.get("own2") as [UInt8]? == value)
        }
        try await cache.async.set("nil", nil as String?)
        #expect(try await cache.async.get("nil") as String?? == .some(.none), "nil is still a stored nil")
        #expect(try await cache.async.hasKey("nil"))
    }

    @Test(arguments: TestLoops.Kind.allCases)
    func localhostAndOtherNamesResolveAtConnectAndEveryAddressIsTried(_ loop: TestLoops.Kind) async throws {
        let port = try #require(TestServers.redisURL.flatMap(TestServers.hostPort)?.1)
        // The server listens on 127.0.0.1 only: if "localhost" gives ::1 first, that address refuses
        // and the next one must be tried.
        let caches = try Caches(settings: ["default": CacheSettings(backend: "redis", location: ["redis://localhost:\(port)/7"],
                                                                  options: ["COMMAND_TIMEOUT": 10])], loop: loop.loop)
        let cache = caches.default
        try await cache.async.set("where", "localhost")
        #expect(try await cache.async.get("where") as String? == "localhost")
        #expect(try await onPlainThread { try cache.get("where") as String? } == "localhost")
        caches.closeAll()

        // A name that does not resolve: the registry is built, calls fail typed (both faces), no hang.
        let unresolved = try Caches(settings: ["default": CacheSettings(
            backend: "redis", location: ["redis://no-such-host.invalid:6379/0"], options: ["CONNECT_TIMEOUT": 2])], loop: loop.loop)
        for _ in 0..<2 {
            await #expect(throws: CacheError.self) { try await unresolved.default.async.get("k") as String? }
        }
        let blockingError = await #expect(throws: CacheError.self) { try await onPlainThread { try unresolved.default.get("k") as String? } }
        guard let e = blockingError, e.code == .connectionFailed, let reason = e.reason else {
            Issue.record("expected connectionFailed, got \(String(describing: blockingError))")
            return
        }
        #expect(reason.contains("no-such-host.invalid"), "the error names the host: \(reason)")
    }

    @Test(.timeLimit(.minutes(3)), arguments: TestLoops.Kind.allCases)
    func aRegistryBuiltWhileTheServerIsDownWorksOnceItIsUp(_ loop: TestLoops.Kind) async throws {
        let server = try ServerProcess(.redis)
        server.stop()  // a port of its own, nothing listening yet
        let caches = try Caches(settings: ["default": CacheSettings(backend: "redis", location: [server.redisURL + "/0"],
                                                                  options: ["COMMAND_TIMEOUT": 5])], loop: loop.loop)
        defer { caches.closeAll(); server.stop() }
        await #expect(throws: CacheError.self) { try await caches.default.async.set("k", "v") }
        await #expect(throws: CacheError.self) { try await onPlainThread { try caches.default.set("k", "v") } }
        try await onPlainThread { try server.start() }
        let up = try await eventuallyAsync(30) { (try? await caches.default.async.set("k", "up")) != nil }
        #expect(up, "the async face reached the server once it was up")
        #expect(try await onPlainThread { try caches.default.get("k") as String? } == "up")
    }

    @Test(.timeLimit(.minutes(3)), arguments: TestLoops.Kind.allCases)
    func commandsInFlightWhenTheLoopShutsDownEndTypedAndLaterOnesFailAtOnce(_ kind: TestLoops.Kind) async throws {
        let server = try ServerProcess(.redis)  // started
        defer { server.stop() }
        let loop = kind.makePrivateLoop("redis-shutdown-\(kind)")
        let caches = try Caches(settings: ["default": CacheSettings(backend: "redis", location: [server.redisURL + "/0"],
                                                                  options: ["COMMAND_TIMEOUT": 60])], loop: loop)
        let cache = caches.default
        try await cache.async.set("k", "v")  // connected
        server.pause(true)  // nothing is answered from here: the commands below stay in flight
        defer { server.pause(false) }
        #expect(waitUntilRedisStalls(port: server.port), "the server is paused")
        let ended = Box(Atomic<Int>(0))
        let typed = Box(Atomic<Int>(0))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask {
                    do {
                        let v = try await cache.async.get("k\(i)") as String?
                        Issue.record("call \(i) returned \(String(describing: v)) from a paused server")
                    } catch let error as CacheError where error.code == .shutDown {
                        typed.value.add(1, ordering: .relaxed)
                    } catch {
                        Issue.record("call \(i) ended with \(error), not CacheError.shutDown")
                    }
                    ended.value.add(1, ordering: .relaxed)
                }
            }
            // Give the commands time to reach the loop (those that have not yet fail the same way:
            // the outcome does not depend on this wait), then shut it down; the 60 s timeout cannot
            // end them, and the paused server never answers.
            try await Task.sleep(for: .milliseconds(200))
            #expect(ended.value.load(ordering: .relaxed) == 0, "nothing ended before the shutdown")
            try await onPlainThread { loop.shutdown() }
            try await group.waitForAll()
        }
        #expect(ended.value.load(ordering: .relaxed) == 200 && typed.value.load(ordering: .relaxed) == 200)
        // Later calls fail at once, typed.
        await #expect(throws: CacheError.self) { try await cache.async.get("after") as String? }
    }

    @Test(.timeLimit(.minutes(3)))
    func anActorOnALoopThatShutDownStillRunsOneJobAtATime() async throws {
        let loop = EpollEventLoop(name: "actor-after-shutdown")
        let counter = LoopCounter(loop: loop)
        _ = await counter.enter()  // runs on the loop
        loop.shutdown()
        let overlaps = Box(Atomic<Int>(0))
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<64 {
                group.addTask { if await counter.enter() > 1 { overlaps.value.add(1, ordering: .relaxed) } }
            }
        }
        #expect(overlaps.value.load(ordering: .relaxed) == 0, "jobs of one actor ran at the same time after shutdown")
        #expect(await counter.total == 65)
    }
}

/// An actor pinned to a loop that notes how many of its jobs run at once.
actor LoopCounter {
    nonisolated let loop: EpollEventLoop
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    private nonisolated let inside = Atomic<Int>(0)
    var total = 0
    init(loop: EpollEventLoop) { self.loop = loop }

    /// Returns how many jobs of this actor were running while this one ran (1 when isolation holds).
    func enter() -> Int {
        let now = inside.add(1, ordering: .sequentiallyConsistent).newValue
        var most = now
        // Hold the actor for a little while, so that a second thread running its jobs would overlap.
        let until = monotonicNanos() + 2_000_000
        while monotonicNanos() < until { most = max(most, inside.load(ordering: .sequentiallyConsistent)) }
        inside.subtract(1, ordering: .sequentiallyConsistent)
        total += 1
        return most
    }
}

/// Fail-open and the circuit breaker against a Redis that is killed and restarted.
@Suite(.enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)))
struct RedisFailOpenTests {
    static func settings(_ url: String, failOpen: Bool) -> CacheSettings {
        CacheSettings(backend: "redis", location: [url], options: [
            "IGNORE_EXCEPTIONS": .bool(failOpen), "CIRCUIT_BREAKER_THRESHOLD": 3, "CIRCUIT_BREAKER_COOLDOWN": 0.2,
            "CONNECT_TIMEOUT": 1, "COMMAND_TIMEOUT": 1,
        ])
    }

    @Test(.timeLimit(.minutes(3)), arguments: TestLoops.Kind.allCases)
    func aKilledRedisWithFailOpenKeepsViewsAnsweringAndTheBreakerClosesAfterTheRestart(_ loop: TestLoops.Kind) async throws {
        let server = try ServerProcess(.redis)
        defer { server.stop() }
        let caches = try Caches(settings: [
            "default": RedisFailOpenTests.settings(server.redisURL + "/0", failOpen: true),
            "strict": RedisFailOpenTests.settings(server.redisURL + "/1", failOpen: false),
        ], loop: loop.loop)
        let open = caches.default
        let strict = try caches["strict"]
        // The 1 s command timeout is a bound, not a promise: on a loaded machine the first writes retry.
        #expect(try await eventuallyAsync(20) { (try? await open.async.set("k", "v")) != nil })
        #expect(try await eventuallyAsync(20) { (try? await strict.async.set("k", "v")) != nil })
        server.stop()

        // Fail-open: reads are misses, writes are swallowed, getOrSet answers with its own value; in both faces.
        #expect(try await open.async.get("k") as String? == nil)
        try await open.async.set("k", "w")
        #expect(try await open.async.add("k2", "w") == false)
        #expect(try await open.async.delete("k") == false)
        #expect(try await open.async.getOrSet("page") { "rendered" } == "rendered")
        #expect(try await onPlainThread { try open.get("k") as String? } == nil)
        try await onPlainThread { try open.set("k", "w") }
        // Semantic errors are not hidden, and incr has no value to make up.
        await #expect(throws: CacheError.self) { try await open.async.incr("n") }

        // Without fail-open the errors stay typed; after 3 server failures the breaker skips the server.
        for _ in 0..<3 {
            await #expect(throws: CacheError.self) { try await strict.async.get("k") as String? }
        }
        await #expect(throws: CacheError.circuitOpen(alias: "strict")) { try await strict.async.get("k") as String? }
        await #expect(throws: CacheError.circuitOpen(alias: "strict")) { try await onPlainThread { try strict.get("k") as String? } }

        // Back up: after the cool-down one probe reaches the server and closes the breaker.
        try await onPlainThread { try server.start() }
        let closed = try await eventuallyAsync(30) {
            (try? await strict.async.set("k", "back")) != nil
        }
        #expect(closed, "the breaker closed once the server was back")
        #expect(try await strict.async.get("k") as String? == "back")
        let openBack = try await eventuallyAsync(30) {
            guard (try? await open.async.set("k", "open-back")) != nil else { return false }
            return (try? await open.async.get("k") as String?) == "open-back"
        }
        #expect(openBack, "the fail-open cache stores and reads again")
    }
}

/// The cross-process stampede lock, with real processes (the `tandem` CLI) and with separate
/// registries in one process (each its own single-flight map) in the blocking face.
@Suite(.enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)))
struct StampedeLockTests {
    @Test(.timeLimit(.minutes(3)))
    func fourProcessesComputeAColdKeyOnceWithTheLock() async throws {
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("tandem")
        guard FileManager.default.isExecutableFile(atPath: exe.path) else {
            Issue.record("the tandem executable is not beside the test binary (\(exe.path)): build with --build-tests")
            return
        }
        let fx = RedisFixture(loop: .epoll)
        // Generous timeouts: four processes start at once on a machine busy with the other suites
        // (with the default second, one of them once timed out and printed nothing).
        let url = "\(fx.url)?key_prefix=lock-\(UUID().uuidString.prefix(8))&connect_timeout=10&command_timeout=10"
        let runs = try await withThrowingTaskGroup(of: (status: Int32, output: String, errors: String).self) { group in
            for _ in 0..<4 {
                group.addTask {
                    try await onPlainThread {
                        try runProgram(exe.path, ["get-or-set", "hot", "v", "--produce-ms", "300", "--lock", "--url", url])
                    }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        for run in runs where run.status != 0 {
            Issue.record("a process failed (status \(run.status)): \(run.errors)")
        }
        let outputs = runs.map { $0.output.trimmingCharacters(in: .whitespacesAndNewlines) }
        #expect(outputs.filter { $0 == "computed v" }.count == 1, "one process computed: \(outputs)")
        #expect(outputs.filter { $0 == "cached v" }.count == 3, "the others read its value: \(outputs)")
    }

    @Test(.timeLimit(.minutes(3)))
    func separateRegistriesShareOneComputationThroughTheLockInTheBlockingFace() async throws {
        let fx = RedisFixture(loop: .epoll)
        let prefix = "lockb-\(UUID().uuidString.prefix(8))"
        let runs = Box(Atomic<Int>(0))
        let callers = try (0..<4).map { _ in
            try Caches(settings: ["default": CacheSettings(backend: "redis", location: [fx.url], keyPrefix: prefix,
                                                         options: ["STAMPEDE_LOCK_TIMEOUT": 5, "COMMAND_TIMEOUT": 10])]).default
        }
        let results = callers.map { cache in
            startOnPlainThread {
                try cache.getOrSet("hot") { () -> String in
                    runs.value.add(1, ordering: .relaxed)
                    usleep(300_000)
                    return "v"
                }
            }
        }
        for r in results { #expect(try await r.value() == "v") }
        #expect(runs.value.load(ordering: .relaxed) == 1, "one computation across four registries")
        #expect(try await callers[0].async.get("hot:tandem-lock") as String? == nil, "the lock was released")
    }
}
