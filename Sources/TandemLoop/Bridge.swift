import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A thread-local pointer slot (a pthread key), for the markers the bridges and guard need.
final class ThreadSlot: Sendable {
    private let key: pthread_key_t
    init() {
        var k = pthread_key_t()
        precondition(pthread_key_create(&k, nil) == 0, "pthread_key_create failed")
        key = k
    }
    var value: UnsafeMutableRawPointer? {
        get { pthread_getspecific(key) }
    }
    func set(_ v: UnsafeMutableRawPointer?) { pthread_setspecific(key, v) }
}

/// Passage between the blocking and the async worlds (asgiref's `async_to_sync` and `sync_to_async`).
public enum Bridge {
    /// Set on a thread while it runs offloaded blocking work inline inside a bridge (see ``offload(threadSensitive:_:)``):
    /// that code is blocking code by intent, so the guard treats it as such.
    static let offloadedSync = ThreadSlot()
    /// Set on a thread while it is blocked in ``blocking(_:)`` serving its bridge's jobs.
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
    /// Refused with ``TandemError/blockingCallOnEventLoop(operation:)`` on a loop thread; inside a Swift
    /// task it follows the async-safety policy (``AsyncSafety``).
    public static func blocking<T: Sendable>(
        file: String = #fileID, line: Int = #line, _ body: @escaping @Sendable () async throws -> T
    ) throws -> T {
        if !inOffloadedCode {
            try AsyncSafety.checkBlockingCall("Bridge.blocking", file: file, line: line)
        } else if AsyncSafety.onEventLoopThread {
            throw TandemError.blockingCallOnEventLoop(operation: "Bridge.blocking")
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
    /// - Inside ``blocking(_:)`` the work runs inline on the bridge's own thread (which is blocked
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
    public static var sensitiveThreadID: pthread_t? { WorkerPool.sensitive.firstThreadID }
}

/// The executor a thread becomes while it waits in `Bridge.blocking`: jobs of the bridged task (and
/// its children) are queued here and run on the waiting thread.
final class BridgeExecutor: TaskExecutor, @unchecked Sendable {
    // Why @unchecked Sendable is safe: all mutable state is inside `state` (a Mutex); `wakeup` is a
    // semaphore, itself thread-safe.
    private struct State {
        var jobs: [UnownedJob] = []
        var sleeping = false
        var result: Result<any Sendable, any Error>?
    }
    private let state = Mutex(State())
    private let wakeup = DispatchSemaphore(value: 0)

    func enqueue(_ job: consuming ExecutorJob) {
        let j = UnownedJob(job)
        let wake = state.locked { s -> Bool in
            s.jobs.append(j)
            defer { s.sleeping = false }
            return s.sleeping
        }
        if wake { wakeup.signal() }
    }

    func finish(_ r: Result<any Sendable, any Error>) {
        let wake = state.locked { s -> Bool in
            s.result = r
            defer { s.sleeping = false }
            return s.sleeping
        }
        if wake { wakeup.signal() }
    }

    func runUntilFinished<T>(as: T.Type) throws -> T {
        let previous = Bridge.bridgeThread.value
        Bridge.bridgeThread.set(Unmanaged.passUnretained(self).toOpaque())
        defer { Bridge.bridgeThread.set(previous) }
        var batch: [UnownedJob] = []
        while true {
            let result = state.locked { s -> Result<any Sendable, any Error>? in
                swap(&batch, &s.jobs)
                if batch.isEmpty, s.result == nil { s.sleeping = true }
                return batch.isEmpty ? s.result : nil
            }
            if let result {
                switch result {
                case .success(let v):
                    guard let t = v as? T else { preconditionFailure("bridge result of unexpected type") }
                    return t
                case .failure(let e): throw e
                }
            }
            if batch.isEmpty {
                wakeup.wait()
                continue
            }
            for j in batch { j.runSynchronously(on: asUnownedTaskExecutor()) }
            batch.removeAll(keepingCapacity: true)
        }
    }
}

/// A bounded pool of plain threads for blocking work (`Bridge.offload`) and, with one thread, the
/// dedicated thread for thread-sensitive work.
final class WorkerPool: Sendable {
    static let shared = WorkerPool(name: "tandem-offload", maxThreads: 32)
    static let sensitive = WorkerPool(name: "tandem-sync", maxThreads: 1)

    let name: String
    let maxThreads: Int
    private struct State {
        var queue: [@Sendable () -> Void] = []
        var head = 0
        var threads = 0
        var idle = 0
        var firstThread: pthread_t?
    }
    private let state = Mutex(State())
    private let available = DispatchSemaphore(value: 0)

    init(name: String, maxThreads: Int) {
        self.name = name
        self.maxThreads = maxThreads
    }

    var firstThreadID: pthread_t? { state.locked { $0.firstThread } }

    func submit(_ work: @escaping @Sendable () -> Void) {
        let spawn = state.locked { s -> Bool in
            s.queue.append(work)
            if s.queue.count - s.head > s.idle && s.threads < maxThreads {
                s.threads += 1
                return true
            }
            return false
        }
        available.signal()
        if spawn {
            let t = Thread { [self] in workerLoop() }
            t.name = name
            t.start()
        }
    }

    private func workerLoop() {
        state.locked { s in if s.firstThread == nil { s.firstThread = pthread_self() } }
        while true {
            state.locked { $0.idle += 1 }
            available.wait()
            let work = state.locked { s -> (@Sendable () -> Void)? in
                s.idle -= 1
                guard s.head < s.queue.count else { return nil }
                let w = s.queue[s.head]
                s.head += 1
                if s.head > 1024 && s.head * 2 > s.queue.count {
                    s.queue.removeFirst(s.head)
                    s.head = 0
                }
                return w
            }
            work?()
        }
    }
}
