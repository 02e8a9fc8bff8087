import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import Tandem
import TandemTestSupport
import Testing
@_spi(Backend) import TandemCache

/// A backend whose gets wait until the test lets them go: calls in flight on demand. The async face
/// waits without blocking a thread (the test process has only a few cooperative threads).
final class GatedBackend: NonBlockingCacheBackend, @unchecked Sendable {
    // Why @unchecked Sendable is safe: `inner` is itself Sendable and immutable; the counters are Atomics.
    let inner = LocMemBackend(location: "gated-\(UUID().uuidString)")
    private let permits = Atomic<Int>(0)
    let entered = Atomic<Int>(0)
    let shutdowns = Atomic<Int>(0)

    /// Lets one waiting (or future) get through.
    func release() { permits.add(1, ordering: .relaxed) }

    private func takePermit() -> Bool {
        var p = permits.load(ordering: .relaxed)
        while p > 0 {
            let (done, now) = permits.compareExchange(expected: p, desired: p - 1, ordering: .relaxed)
            if done { return true }
            p = now
        }
        return false
    }

    func get(_ key: String) throws -> StoredValue? {
        entered.add(1, ordering: .relaxed)
        while !takePermit() { usleep(1000) }
        return try inner.get(key)
    }
    func asyncGet(_ key: String) async throws -> StoredValue? {
        entered.add(1, ordering: .relaxed)
        while !takePermit() { try await Task.sleep(for: .milliseconds(1)) }
        return try inner.get(key)
    }
    var keyStrictness: KeyStrictness { .lenient }
    var backendDescription: String { "gated" }
    /// Waits like a network backend, so that the cache counts its calls in flight.
    var waitsOnIO: Bool { true }
    func getMany(_ keys: [String]) throws -> [String: StoredValue] { try inner.getMany(keys) }
    func set(_ key: String, _ value: StoredValue, expiry: CacheExpiry, mode: SetMode) throws -> Bool {
        try inner.set(key, value, expiry: expiry, mode: mode)
    }
    func setMany(_ items: [(key: String, value: StoredValue)], expiry: CacheExpiry) throws -> [String] { try inner.setMany(items, expiry: expiry) }
    func delete(_ key: String) throws -> Bool { try inner.delete(key) }
    func deleteMany(_ keys: [String]) throws { try inner.deleteMany(keys) }
    func incr(_ key: String, by delta: Int64) throws -> Int64 { try inner.incr(key, by: delta) }
    func touch(_ key: String, expiry: CacheExpiry) throws -> Bool { try inner.touch(key, expiry: expiry) }
    func hasKey(_ key: String) throws -> Bool { try inner.hasKey(key) }
    func clear() throws { try inner.clear() }
    func close() {}
    func shutdown() async { shutdowns.add(1, ordering: .relaxed) }
}

@Suite struct LifecycleTests {
    static func gatedCaches() throws -> (Caches, GatedBackend) {
        let backend = GatedBackend()
        var registry = BackendRegistry.standard
        registry.register(BackendEntry(name: "gated") { _ in backend })
        return (try Caches(settings: ["default": CacheSettings(backend: "gated")], registry: registry), backend)
    }

    @Test(.timeLimit(.minutes(3)))
    func shutdownWaitsForCallsInFlightAndRefusesNewOnes() async throws {
        let (caches, backend) = try LifecycleTests.gatedCaches()
        try await caches.default.async.set("k", "v")
        // Two calls in flight, one per face.
        let inFlight = Task { try await caches.default.async.get("k") as String? }
        let blocking = startOnPlainThread { try caches.default.get("k") as String? }
        #expect(try await eventually(30) { backend.entered.load(ordering: .relaxed) == 2 })
        let shutdown = Task { await caches.shutdown(gracePeriod: .seconds(30)) }
        #expect(try await eventually(30) { caches.default.isShutDown })
        await #expect(throws: CacheError.shutDown("cache 'default'")) { try await caches.default.async.get("k") as String? }
        await #expect(throws: CacheError.shutDown("cache 'default'")) { try await onPlainThread { try caches.default.set("k", "w") } }
        #expect(backend.shutdowns.load(ordering: .relaxed) == 0, "the backend is not shut down while calls are in flight")
        backend.release()
        backend.release()
        let asyncValue = try await inFlight.value
        let blockingValue = try await blocking.value()
        #expect(asyncValue == "v" && blockingValue == "v", "the calls in flight finished with their values")
        #expect(await shutdown.value == ["default": 0])
        #expect(backend.shutdowns.load(ordering: .relaxed) == 1)
        #expect(await caches.shutdown() == ["default": 0], "a second shutdown returns at once")
        #expect(backend.shutdowns.load(ordering: .relaxed) == 1)
    }

    @Test(.timeLimit(.minutes(3)))
    func aGracePeriodThatRunsOutIsReportedAndTheBackendStillShutsDown() async throws {
        let (caches, backend) = try LifecycleTests.gatedCaches()
        let stuck = Task { try await caches.default.async.get("k") as String? }
        #expect(try await eventually(30) { backend.entered.load(ordering: .relaxed) == 1 })
        #expect(await caches.shutdown(gracePeriod: .milliseconds(50)) == ["default": 1])
        #expect(backend.shutdowns.load(ordering: .relaxed) == 1)
        backend.release()
        _ = try await stuck.value
    }

    @Test(.timeLimit(.minutes(3)))
    func inAServiceGroupTheCachesStopOnGracefulShutdownAndWorkWithoutOne() async throws {
        // Never run as a service: the caches work (nothing waits for run()).
        let plain = try Caches(settings: ["default": CacheSettings(backend: "locmem", location: ["lifecycle-plain"])])
        try await plain.default.async.set("k", 1)
        #expect(try await onPlainThread { try plain.default.get("k") as Int? } == 1)

        let caches = try Caches(settings: ["default": CacheSettings(backend: "locmem", location: ["lifecycle-group"])])
        let group = ServiceGroup(services: [caches], logger: Logger(label: "test.lifecycle"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await caches.default.async.set("k", 2)
            #expect(try await caches.default.async.get("k") as Int? == 2, "running as a service changes nothing")
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(caches.default.isShutDown)
        await #expect(throws: CacheError.shutDown("cache 'default'")) { try await caches.default.async.get("k") as Int? }
    }

    /// The process-wide loops belong to the process (issue 30): an application whose service group
    /// lists them stops its caches, and the loops go on for the next application in the process.
    @Test(.timeLimit(.minutes(3)))
    func theProcessWideLoopsOutliveAServiceGroupThatListsThem() async throws {
        for round in 0..<2 {
            let caches = try Caches(settings: ["default": CacheSettings(backend: "locmem", location: ["pw-\(UUID())"])])
            let group = ServiceGroup(services: [EventLoops.group, EventLoops.shared, caches], logger: Logger(label: "test.lifecycle"))
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                try await caches.default.async.set("k", round)
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
            await #expect(throws: CacheError.shutDown("cache 'default'")) { try await caches.default.async.get("k") as Int? }
            for loop in EventLoops.group.loops {
                let ran = try await withLoopPromise(on: loop) { (p: LoopPromise<Bool>) in p.succeed(loop.inEventLoop) }
                #expect(ran, "round \(round): a process-wide loop still runs work")
            }
        }
    }

    /// The README's service group on a loop group: Redis and HTTP spread over two loops, then the
    /// group's graceful shutdown stops the caches, the client and every loop.
    @Test(.timeLimit(.minutes(3)), .enabled(if: TestServers.shouldRun(TestServers.redisURL != nil && TestServers.httpUpstream != nil),
                                            Comment(rawValue: TestServers.skipMessage)))
    func aLoopGroupInAServiceGroupStopsLastWithEveryLoop() async throws {
        let redis = try TestServers.need(TestServers.redisURL, "redis primary") + "/4094"
        let upstream = try TestServers.need(TestServers.httpUpstream, "HTTP upstream")
        let loops = TandemEventLoopGroup(count: 2, name: "lifecycle-group")
        let caches = try Caches(settings: ["default": CacheSettings(backend: "redis", location: [redis], keyPrefix: "lifecycle-\(UUID().uuidString)")],
                                loopGroup: loops)
        let http = UpstreamClient(loopGroup: loops)
        let group = ServiceGroup(services: [loops, caches, http], logger: Logger(label: "test.lifecycle"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await caches.default.async.set("k", 3)
            #expect(try await caches.default.async.get("k") as Int? == 3)
            #expect(try await http.async.get(upstream + "/bytes/1").status == .ok)
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        await #expect(throws: CacheError.shutDown("cache 'default'")) { try await caches.default.async.get("k") as Int? }
        await #expect(throws: UpstreamError.clientShutDown) { try await http.async.get(upstream + "/bytes/1") }
        for loop in loops.loops {
            #expect(throws: TandemError.self, "every loop of the group has stopped") { try loop.execute {} }
        }
    }
}
