import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Passage between the blocking and the async worlds (asgiref's `async_to_sync` and `sync_to_async`).
public enum Bridge {
    /// Set on a thread while it runs offloaded blocking work inline inside a bridge (see ``offload(threadSensitive:_:)``):
    /// that code is blocking code by intent, so the guard treats it as such.
    static let offloadedSync = ThreadSlot()
    /// Set on a thread while it is blocked in ``blocking(file:line:_:)`` serving its bridge's jobs.
    static let bridgeThread = ThreadSlot()

    /// True while the current thread runs blocking code handed over by ``offload(threadSensitive:_:)``.
    public static var inOffloadedCode: Bool { offloadedSync.value != nil }

    /// Runs async work from blocking code and returns its result.
    ///
    /// The calling thread does not just wait: it becomes the task's executor (a `TaskExecutor`
    /// preference), so the async body runs on this very thread between suspensions, with no hop to
    /// another thread and back. Blocking work that the body offloads runs inline here too, which is
    /// what makes any nesting (blocking -> async -> blocking -> ...) deadlock-free.
    ///
    /// Refused with ``TandemError/blockingCallOnEventLoop(operation:site:)`` on a loop thread; inside a Swift
    /// task it follows the async-safety policy (``AsyncSafety``).
    public static func blocking<T: Sendable>(
        file: String = #fileID, line: Int = #line, _ body: @escaping @Sendable () async throws -> T
    ) throws -> T {
        if !inOffloadedCode {
            try AsyncSafety.checkBlockingCall("Bridge.blocking", file: file, line: line)
        } else if AsyncSafety.onEventLoopThread {
            throw TandemError.blockingCallOnEventLoop(operation: "Bridge.blocking", site: "\(file):\(line)")
        }
        let executor = BridgeExecutor()
        Task(executorPreference: executor) {
            do {
                executor.finish(.success(try await body()))
            } catch {
                executor.finish(.failure(error))
            }
        }
        return try executor.runUntilFinished(as: T.self)
    }

    /// Runs blocking work from async code without blocking a cooperative thread, and returns its result.
    ///
    /// - Inside ``blocking(file:line:_:)`` the work runs inline on the bridge's own thread (which is blocked
    ///   waiting for this async code anyway).
    /// - With `threadSensitive: true` all such calls run on one dedicated thread, in order.
    /// - Otherwise it runs on a bounded pool of threads (``poolSize``).
    public static func offload<T: Sendable>(
        threadSensitive: Bool = false, _ body: @escaping @Sendable () throws -> T
    ) async throws -> T {
        if bridgeThread.value != nil {
            return try runMarkedAsOffloaded(body)
        }
        let pool = threadSensitive ? WorkerPool.sensitive : WorkerPool.shared
        return try await withCheckedThrowingContinuation { c in
            pool.submit { c.resume(with: Result { try runMarkedAsOffloaded(body) }) }
        }
    }

    private static func runMarkedAsOffloaded<T>(_ body: () throws -> T) rethrows -> T {
        let previous = offloadedSync.value
        offloadedSync.set(UnsafeMutableRawPointer(bitPattern: 1))
        defer { offloadedSync.set(previous) }
        return try body()
    }

    /// The most threads ``offload(threadSensitive:_:)`` uses for non-sensitive work (default 32).
    public static var poolSize: Int { WorkerPool.shared.maxThreads }

    /// The dedicated thread's identifier for thread-sensitive work, once it has started (for tests and logs).
    package static var sensitiveThreadID: pthread_t? { WorkerPool.sensitive.firstThreadID }
}
