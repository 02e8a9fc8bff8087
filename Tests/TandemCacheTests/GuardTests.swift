import Foundation
import Synchronization
import Tandem
import TandemTestSupport
import Testing

/// The guard judges the call, not the backend: a view that passes on LocMem passes on Redis.
@Suite struct CacheGuardTests {

    private func cache(_ policy: AsyncUnsafePolicy? = nil, backend: String = "locmem") throws -> Cache {
        var s = CacheSettings(backend: backend, location: ["guard-\(UUID())"])
        if let policy { s.options["ASYNC_UNSAFE"] = .string(policy.rawValue) }
        return try Caches(settings: ["default": s]).default
    }

    @Test(arguments: ["locmem", "dummy"])
    func aBlockingCallInsideATaskIsRefusedOnInMemoryBackends(_ backend: String) async throws {
        let c = try cache(backend: backend)
        // Each refusal names the operation and the caller's line (issue 30).
        let set = #expect(throws: TandemError.self) { try c.set("k", 1) }
        #expect(set == .blockingCallInAsyncContext(operation: "cache 'default' set", site: "\(#fileID):\(#line - 1)"))
        let get = #expect(throws: TandemError.self) { _ = try c.get("k") as Int? }
        #expect(get == .blockingCallInAsyncContext(operation: "cache 'default' get", site: "\(#fileID):\(#line - 1)"))
        let decr = #expect(throws: TandemError.self) { try c.decr("k") }
        #expect(decr == .blockingCallInAsyncContext(operation: "cache 'default' incr", site: "\(#fileID):\(#line - 1)"))
        let getOrSet = #expect(throws: TandemError.self) { _ = try c.getOrSet("k") { 1 } }
        #expect(getOrSet == .blockingCallInAsyncContext(operation: "cache 'default' get_or_set", site: "\(#fileID):\(#line - 1)"))
        #expect(set?.description.contains("at \(#fileID):") == true, "the message names the line: \(String(describing: set))")
        // The same calls from blocking code (a plain thread) are fine, and so is the async face here.
        try await onPlainThread { try c.set("k", 1) }
        #expect(try await c.async.get("k") as Int? == (backend == "locmem" ? 1 : nil))
    }

    @Test func aBlockingCallOnALoopThreadIsRefusedEvenWithAllow() async throws {
        let c = try cache(.allow)
        let loop = EpollEventLoop(name: "guard-loop")
        defer { loop.shutdown() }
        let setLine = #line + 4  // the line of `c.set` below
        let refusal = try await withCheckedThrowingContinuation { (cont: CheckedContinuation<TandemError?, any Error>) in
            do {
                try loop.execute {
                    do { try c.set("k", 1); cont.resume(returning: nil) } catch let e as TandemError { cont.resume(returning: e) } catch {
                        cont.resume(throwing: error)
                    }
                }
            } catch { cont.resume(throwing: error) }
        }
        #expect(refusal == .blockingCallOnEventLoop(operation: "cache 'default' set", site: "\(#fileID):\(setLine)"))
    }

    @Test func theWarningNamesTheCallersLine() async throws {
        let c = try cache(.warn)
        let line = #line + 1
        try c.set("warned", 1)
        #expect(AsyncSafety.warnedSites.contains("\(#fileID):\(line)"), "\(AsyncSafety.warnedSites)")
        #expect(!AsyncSafety.warnedSites.contains { $0.hasPrefix("TandemCache/") }, "no site inside Tandem: \(AsyncSafety.warnedSites)")
        let getLine = #line + 1
        #expect(try c.get("warned", default: 0) == 1)
        #expect(AsyncSafety.warnedSites.contains("\(#fileID):\(getLine)"))
    }

    /// The Django session store's blocking methods pass the caller's line on (issue 30): a warning
    /// names the view, not the store.
    @Test func theSessionStoresWarningsNameTheCallersLine() throws {
        let store = DjangoSessionStore(cache: try cache(.warn), engine: .cache)
        let createLine = #line + 1
        let session = try store.create(["user": "ada"])
        let loadLine = #line + 1
        #expect(try store.load(sessionKey: session.key)?.data["user"] == "ada")
        let saveLine = #line + 1
        try store.save(session)
        let deleteLine = #line + 1
        #expect(try store.delete(sessionKey: session.key))
        for line in [createLine, loadLine, saveLine, deleteLine] {
            #expect(AsyncSafety.warnedSites.contains("\(#fileID):\(line)"), "line \(line): \(AsyncSafety.warnedSites)")
        }
        #expect(!AsyncSafety.warnedSites.contains { $0.hasPrefix("TandemCache/") }, "no site inside Tandem: \(AsyncSafety.warnedSites)")
    }

    @Test func anotherRuntimesLoopThreadsAreRecognisedOnceRegistered() async throws {
        let c = try cache(.allow)
        /// The threads this test's make-believe runtime runs its loops on (by pthread identity).
        let loopThreads = Box(Mutex<Set<UInt>>([]))
        /// Runs `body` on a new plain thread, marked as one of the runtime's loop threads or not.
        func onThread(asLoop: Bool, _ body: @escaping @Sendable () throws -> Void) async -> (any Error)? {
            await withCheckedContinuation { (cont: CheckedContinuation<(any Error)?, Never>) in
                let t = Thread {
                    let me = UInt(pthread_self())  // pthread_t is an integer on Linux
                    if asLoop { loopThreads.value.locked { _ = $0.insert(me) } }
                    defer { if asLoop { loopThreads.value.locked { _ = $0.remove(me) } } }
                    do { try body(); cont.resume(returning: nil) } catch { cont.resume(returning: error) }
                }
                t.start()
            }
        }
        #expect(await onThread(asLoop: true) { try c.set("k", 1) } == nil, "not a loop thread before the check is registered")
        AsyncSafety.recogniseEventLoopThreads {
            let me = UInt(pthread_self())  // pthread_t is an integer on Linux
            return loopThreads.value.locked { $0.contains(me) }
        }
        let refused = await onThread(asLoop: true) { try c.set("k", 2) }
        #expect((refused as? TandemError)?.withoutSite == .blockingCallOnEventLoop(operation: "cache 'default' set"), "\(String(describing: refused))")
        #expect(await onThread(asLoop: false) { try c.set("k", 3) } == nil, "other threads are unaffected")
        #expect(try await c.async.get("k") as Int? == 3)
    }
}
