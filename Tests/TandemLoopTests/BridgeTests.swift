import Foundation
import Synchronization
import TandemLoop
import TandemTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Alternates blocking and async layers `depth` times and returns the depth reached.
@Sendable func nestBlocking(_ depth: Int) throws -> Int {
    guard depth > 0 else { return 0 }
    return try Bridge.blocking { try await nestAsync(depth - 1) + 1 }
}

@Sendable func nestAsync(_ depth: Int) async throws -> Int {
    guard depth > 0 else { return 0 }
    await Task.yield()
    return try await Bridge.offload { try nestBlocking(depth - 1) } + 1
}

/// An actor that lives on a loop: its methods run on the loop thread.
actor LoopPinned {
    let loop: EpollEventLoop
    init(loop: EpollEventLoop) { self.loop = loop }
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    func where_() -> Bool { loop.inEventLoop }
}

@Suite struct BridgeTests {
    @Test func blockingReturnsValueAndThrowsErrors() async throws {
        let v = try await Bridge.offload { try Bridge.blocking { () async throws -> Int in
            try await Task.sleep(for: .milliseconds(1))
            return 42
        } }
        #expect(v == 42)
        struct Boom: Error, Equatable {}
        await #expect(throws: Boom.self) {
            try await Bridge.offload { try Bridge.blocking { () async throws -> Int in throw Boom() } }
        }
    }

    @Test func randomizedNestingTenThousandRounds() async throws {
        let rounds = 10_000
        var rng = SystemRandomNumberGenerator()
        let depths = (0..<rounds).map { _ in Int.random(in: 1...8, using: &rng) }
        let reached = try await Bridge.offload { () throws -> [Int] in
            try depths.map { try nestBlocking($0) }
        }
        #expect(reached == depths)
    }

    @Test func nestingFromManyThreadsAtOnce() async throws {
        let results = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<16 { group.addTask { try await Bridge.offload { try nestBlocking(2 + i % 5) } } }
            return try await group.reduce(0, +)
        }
        #expect(results == (0..<16).map { 2 + $0 % 5 }.reduce(0, +))
    }

    @Test func threadSensitiveCallsShareOneThread() async throws {
        let ids = try await withThrowingTaskGroup(of: UInt.self) { group in
            for _ in 0..<50 { group.addTask { try await Bridge.offload(threadSensitive: true) { UInt(pthread_self()) } } }
            return try await group.reduce(into: Set<UInt>()) { $0.insert($1) }
        }
        #expect(ids.count == 1)
        let sensitive = try #require(Bridge.sensitiveThreadID)
        #expect(ids.first == UInt(sensitive))
    }

    @Test func threadSensitiveInsideThreadSensitiveRunsInline() async throws {
        let (outer, inner) = try await Bridge.offload(threadSensitive: true) { () throws -> (UInt, UInt) in
            let me = UInt(pthread_self())
            let inner = try Bridge.blocking { try await Bridge.offload(threadSensitive: true) { UInt(pthread_self()) } }
            return (me, inner)
        }
        #expect(outer == inner)
    }

    @Test func blockingRefusedOnTheLoopThread() async throws {
        let loop = EpollEventLoop(name: "bridge-refusal")
        defer { loop.shutdown() }
        let error = try await withLoopPromise(on: loop) { (p: LoopPromise<TandemError?>) in
            do {
                _ = try Bridge.blocking { 1 }
                p.succeed(nil)
            } catch let e as TandemError {
                p.succeed(e)
            } catch {
                p.fail(error)
            }
        }
        #expect(error?.withoutSite == .blockingCallOnEventLoop(operation: "Bridge.blocking"))
    }

    @Test func actorPinnedToTheLoopRunsOnTheLoopThread() async throws {
        let loop = EpollEventLoop(name: "actor-loop")
        defer { loop.shutdown() }
        let a = LoopPinned(loop: loop)
        #expect(await a.where_())
    }

    @Test func taskExecutorPreferenceRunsOnTheLoop() async throws {
        let loop = EpollEventLoop(name: "task-executor")
        defer { loop.shutdown() }
        let on = await Task(executorPreference: loop) { loop.inEventLoop }.value
        #expect(on)
    }
}

@Suite(.serialized) struct GuardTests {
    @Test func policyErrorInsideATask() async throws {
        let refusal = #expect(throws: TandemError.self) { try AsyncSafety.checkBlockingCall("op", policy: .error) }
        #expect(refusal == .blockingCallInAsyncContext(operation: "op", site: "\(#fileID):\(#line - 1)"))
        let message = TandemError.blockingCallInAsyncContext(operation: "op").description
        #expect(message.contains(".async"))
    }

    @Test func policyWarnAndAllowInsideATask() async throws {
        try AsyncSafety.checkBlockingCall("op", policy: .warn)
        try AsyncSafety.checkBlockingCall("op", policy: .allow)
    }

    @Test func plainThreadsAreNotGuarded() async throws {
        try await Bridge.offload { try AsyncSafety.checkBlockingCall("op", policy: .error) }
    }

    @Test func processPolicyAndEnvironmentParsing() async throws {
        let saved = AsyncSafety.policy
        defer { AsyncSafety.policy = saved }
        AsyncSafety.policy = .allow
        try AsyncSafety.checkBlockingCall("op")
        AsyncSafety.policy = .error
        #expect(throws: TandemError.self) { try AsyncSafety.checkBlockingCall("op") }
        #expect(AsyncUnsafePolicy(settingValue: "1") == .allow)
        #expect(AsyncUnsafePolicy(settingValue: "warn") == .warn)
        #expect(AsyncUnsafePolicy(settingValue: "nope") == nil)
    }
}

@Suite struct CancellationTests {
    @Test(arguments: LoopKind.allCases)
    func tenThousandCancelledWaitsResumeOnceAndCleanUpOnTheLoop(_ kind: LoopKind) async throws {
        let loop = kind.make()
        defer { loop.shutdown() }
        let n = 10_000
        let createdBefore = LoopPromiseStats.created
        let resumedBefore = LoopPromiseStats.resumed
        let started = Box(Atomic<Int>(0))
        let cleanups = Box(Atomic<Int>(0))
        let cleanupsOffLoop = Box(Atomic<Int>(0))
        let outcomes = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<n {
                group.addTask {
                    do {
                        // Loop-side work that never completes by itself: only cancellation ends it.
                        let _: Int = try await withLoopPromise(on: loop) { p in
                            started.value.add(1, ordering: .relaxed)
                            p.onCancel {
                                cleanups.value.add(1, ordering: .relaxed)
                                if !loop.inEventLoop { cleanupsOffLoop.value.add(1, ordering: .relaxed) }
                            }
                        }
                        return false
                    } catch is CancellationError {
                        return true
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(50))
            group.cancelAll()
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(outcomes.count == n && outcomes.allSatisfy { $0 }, "every wait ended with CancellationError")
        // The stats are process-wide and other suites run concurrently: check at least our share.
        #expect(LoopPromiseStats.created - createdBefore >= n)
        // A wait cancelled before its loop-side work started has nothing to clean up; every one that
        // started must have run its cleanup.
        #expect(try await eventually { cleanups.value.load(ordering: .relaxed) == started.value.load(ordering: .relaxed) },
                "every loop-side cleanup ran (\(cleanups.value.load(ordering: .relaxed)) of \(started.value.load(ordering: .relaxed)) started)")
        #expect(started.value.load(ordering: .relaxed) > 0, "some loop-side work started before the cancellation")
        #expect(cleanupsOffLoop.value.load(ordering: .relaxed) == 0, "cleanups ran on the loop thread")
        #expect(LoopPromiseStats.resumed - resumedBefore >= n)
    }

    @Test func completionAfterCancellationIsIgnoredAndResumesOnce() async throws {
        let loop = EpollEventLoop(name: "late")
        defer { loop.shutdown() }
        let resumes = Box(Atomic<Int>(0))
        let holder = Box(Mutex<LoopPromise<Int>?>(nil))
        let task = Task {
            do {
                let v: Int = try await withLoopPromise(on: loop) { p in holder.value.locked { $0 = p } }
                resumes.value.add(1, ordering: .relaxed)
                return v
            } catch {
                resumes.value.add(1, ordering: .relaxed)
                throw error
            }
        }
        // A bound, not a verdict: the task and the loop job wait for threads that, under a sanitizer
        // with every suite running, other tests may hold for tens of seconds.
        try #require(try await eventually(120) { holder.value.locked { $0 != nil } }, "the loop ran the promise's body")
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        let p = try #require(holder.value.locked { $0 })
        #expect(p.isCancelled)
        p.succeed(5)   // the late reply: dropped
        p.fail(CancellationError())
        try await Task.sleep(for: .milliseconds(10))
        #expect(resumes.value.load(ordering: .relaxed) == 1)
    }

    @Test func alreadyCancelledTaskNeverStartsLoopWork() async throws {
        let loop = EpollEventLoop(name: "pre-cancelled")
        defer { loop.shutdown() }
        let started = Box(Atomic<Int>(0))
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            let _: Int = try await withLoopPromise(on: loop) { _ in started.value.add(1, ordering: .relaxed) }
        }
        await #expect(throws: CancellationError.self) { try await task.value }
        try await Task.sleep(for: .milliseconds(20))
        #expect(started.value.load(ordering: .relaxed) == 0)
    }

    @Test func shutDownLoopFailsThePromise() async throws {
        let loop = EpollEventLoop(name: "dead")
        try await Bridge.offload { loop.shutdown() }
        await #expect(throws: TandemError.loopShutDown(loop: "dead")) {
            let _: Int = try await withLoopPromise(on: loop) { p in p.succeed(1) }
        }
    }
}
