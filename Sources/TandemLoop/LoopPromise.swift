import Dispatch
import Synchronization

/// Counts loop promises created and resumed, so that tests (and leak checks) can prove every
/// continuation is resumed exactly once.
@usableFromInline package enum LoopPromiseStats {
    @usableFromInline static let createdCount = Atomic<Int>(0)
    @usableFromInline static let resumedCount = Atomic<Int>(0)
    /// Promises created so far in this process.
    @usableFromInline package static var created: Int { createdCount.load(ordering: .relaxed) }
    /// Promises whose continuation was resumed so far.
    @usableFromInline package static var resumed: Int { resumedCount.load(ordering: .relaxed) }
}

/// The result slot of one async operation driven by a loop: completed exactly once, from any thread,
/// by the loop-side code (``succeed(_:)``/``fail(_:)``) or by cancellation of the waiting task.
///
/// When the waiting task is cancelled, the task resumes at once with `CancellationError`, and the
/// cleanup registered with ``onCancel(_:)`` runs on the loop thread (for example, to remove a curl
/// handle or to mark a Redis reply as abandoned). Later completions are ignored.
///
/// The hot paths are `@inlinable`: each caller gets code specialized for its `T`, instead of generic
/// code that looks up type metadata on every call.
@usableFromInline package final class LoopPromise<T: Sendable>: Sendable {
    @usableFromInline
    struct State {
        @usableFromInline var continuation: UnsafeContinuation<T, any Error>?
        @usableFromInline var result: Result<T, any Error>?
        @usableFromInline var cancelled = false
        @usableFromInline var cleanup: (@Sendable () -> Void)?
        /// The object-form of `cleanup` (no closure to allocate per operation).
        @usableFromInline var canceller: (any LoopPromiseCanceller)?
        /// Completed, with the resumption left to the loop's end-of-turn batch.
        @usableFromInline var deferred = false
        /// The waiting task runs on the loop's own thread (an actor or task executor on the loop):
        /// resuming it only queues its job on the loop, so it is never handed to another thread.
        @usableFromInline var waiterOnLoop = false
        @inlinable init() {}
    }
    /// Set in the initializer rather than by a default value: a stored property's default is
    /// evaluated by a generic function of its own, which looks up `State<T>`'s metadata on every call.
    @usableFromInline let state: Mutex<State>
    /// The loop whose thread runs the loop-side code and the cancellation cleanup (nil: the work
    /// runs elsewhere, and the cleanup runs on the cancelling thread).
    @usableFromInline package let loop: (any TandemEventLoop)?

    @inlinable
    init(loop: (any TandemEventLoop)?) {
        self.state = Mutex(State())
        self.loop = loop
        LoopPromiseStats.createdCount.add(1, ordering: .relaxed)
    }

    /// True once a result (or cancellation) was recorded.
    @inlinable
    package var isCompleted: Bool { state.locked { $0.result != nil } }

    /// True when the waiting task was cancelled first.
    @inlinable
    package var isCancelled: Bool { state.locked { $0.cancelled } }

    /// Completes with a value (ignored if already completed).
    @inlinable
    package func succeed(_ value: T) { complete(.success(value)) }

    /// Completes with an error (ignored if already completed).
    @inlinable
    package func fail(_ error: any Error) { complete(.failure(error)) }

    /// Completes with `result` (ignored if already completed). Returns whether this call completed it.
    ///
    /// On a loop thread that batches resumptions (``EpollEventLoop``), a waiter that is not on this
    /// loop is resumed at the end of the turn, together with the others the turn completed.
    @inlinable @discardableResult
    package func complete(_ result: Result<T, any Error>) -> Bool {
        let batch = ResumeBatch.current
        let outcome = state.locked { s -> Completion<T> in
            guard s.result == nil else { return .alreadyCompleted }
            s.result = result
            s.cleanup = nil
            s.canceller = nil
            guard let c = s.continuation else { return .noWaiterYet }
            if !s.waiterOnLoop, batch != nil {
                s.deferred = true  // the continuation stays here until the batch resumes it
                return .deferred
            }
            s.continuation = nil
            return .resumeNow(c)
        }
        switch outcome {
        case .alreadyCompleted: return false
        case .noWaiterYet: return true
        case .deferred:
            // A closure without captures, made in this specialized code: the batch resumes through
            // it without generic code (no type metadata looked up per completion). The downcast is
            // sound because `DeferredResume.run()` only ever passes the closure the promise it was
            // stored with, which is `self`, a `LoopPromise<T>`.
            batch?.add(self) { unsafeDowncast($0, to: LoopPromise<T>.self).resumeDeferred() }
            return true
        case .resumeNow(let c): resume(c, result); return true
        }
    }

    /// Resumes a continuation whose completion was deferred to the loop's resume batch (reached
    /// through the specialized closure ``complete(_:)`` hands the batch).
    @inlinable
    func resumeDeferred() {
        var result: Result<T, any Error>?
        let c = state.locked { s -> UnsafeContinuation<T, any Error>? in
            guard s.deferred, let c = s.continuation else { return nil }
            s.deferred = false
            s.continuation = nil
            result = s.result
            return c
        }
        if let c, let result { resume(c, result) }
    }

    /// Registers loop-side cleanup to run on the loop thread if the task is cancelled before the
    /// promise completes. If it was already cancelled, `cleanup` runs now (call this on the loop thread).
    @inlinable
    package func onCancel(_ cleanup: @escaping @Sendable () -> Void) {
        let runNow = state.locked { s -> Bool in
            if s.cancelled { return true }
            if s.result == nil { s.cleanup = cleanup }
            return false
        }
        if runNow { cleanup() }
    }

    /// Registers an object to be told, on the cancelling thread (or on the loop, for a promise made by
    /// ``withLoopPromise(on:_:)``), that the task was cancelled before the promise completed. The same
    /// as ``onCancel(_:)`` without a closure to allocate. If it was already cancelled, it is told now.
    @inlinable
    package func onCancel(_ canceller: any LoopPromiseCanceller) {
        let runNow = state.locked { s -> Bool in
            if s.cancelled { return true }
            if s.result == nil { s.canceller = canceller }
            return false
        }
        if runNow { canceller.promiseCancelled() }
    }

    /// Installs the waiting task's continuation; if the promise was already completed (its task was
    /// cancelled first), resumes it at once and returns false: the work is not to be started.
    @inlinable
    func install(_ c: UnsafeContinuation<T, any Error>, waiterOnLoop: Bool = false) -> Bool {
        let ready = state.locked { s -> Result<T, any Error>? in
            if let r = s.result { return r }
            s.continuation = c
            s.waiterOnLoop = waiterOnLoop
            return nil
        }
        guard let ready else { return true }
        resume(c, ready)
        return false
    }

    @inlinable
    func cancel() {
        let (cont, cleanup, canceller, first) = state.locked {
            s -> (UnsafeContinuation<T, any Error>?, (@Sendable () -> Void)?, (any LoopPromiseCanceller)?, Bool) in
            guard s.result == nil else { return (nil, nil, nil, false) }
            s.result = .failure(CancellationError())
            s.cancelled = true
            defer { s.continuation = nil; s.cleanup = nil; s.canceller = nil }
            return (s.continuation, s.cleanup, s.canceller, true)
        }
        guard first else { return }
        if let cont { resume(cont, .failure(CancellationError())) }
        canceller?.promiseCancelled()
        if let cleanup {
            if let loop, !loop.inEventLoop { try? loop.execute(cleanup) } else { cleanup() }
        }
    }

    @inlinable
    func resume(_ c: UnsafeContinuation<T, any Error>, _ r: Result<T, any Error>) {
        LoopPromiseStats.resumedCount.add(1, ordering: .relaxed)
        c.resume(with: r)
    }
}

/// Told when the task waiting on a ``LoopPromise`` is cancelled before the promise completed (see
/// ``LoopPromise/onCancel(_:)-(any LoopPromiseCanceller)``). Called once, on the cancelling thread for a
/// promise made by ``withPromise(waiterLoop:_:)``.
@usableFromInline package protocol LoopPromiseCanceller: AnyObject, Sendable {
    /// The waiting task was cancelled: undo or abandon the work (the task has already been resumed).
    func promiseCancelled()
}

/// What ``LoopPromise/complete(_:)`` found under the lock.
@usableFromInline
enum Completion<T: Sendable> {
    case alreadyCompleted
    case noWaiterYet
    case deferred
    case resumeNow(UnsafeContinuation<T, any Error>)
}

/// A completed promise whose continuation waits in a loop's resume batch, with the function that
/// resumes it (specialized for the promise's type where it was completed).
@usableFromInline
struct DeferredResume: Sendable {
    @usableFromInline let promise: any AnyObject & Sendable
    @usableFromInline let resume: @Sendable (AnyObject) -> Void
    @inlinable init(promise: any AnyObject & Sendable, resume: @escaping @Sendable (AnyObject) -> Void) {
        self.promise = promise
        self.resume = resume
    }
    @inlinable func run() { resume(promise) }
}

/// Runs `start` on `loop`'s thread with a fresh promise and waits for it without blocking a thread.
/// The continuation is resumed exactly once: by the promise's completion, or promptly with
/// `CancellationError` when the task is cancelled (then the promise's `onCancel` cleanup runs on the loop).
/// If the loop is shut down, the call fails with ``TandemError/loopShutDown(loop:)``.
@inlinable
package func withLoopPromise<T: Sendable>(
    on loop: any TandemEventLoop, _ start: @escaping @Sendable (LoopPromise<T>) -> Void
) async throws -> T {
    let promise = LoopPromise<T>(loop: loop)
    return try await withTaskCancellationHandler {
        // The state machine in LoopPromise resumes the continuation exactly once, so an unsafe
        // continuation is enough.
        try await withUnsafeThrowingContinuation { (c: UnsafeContinuation<T, any Error>) in
            let onLoop = loop.inEventLoop
            guard promise.install(c, waiterOnLoop: onLoop) else { return }
            if onLoop {
                start(promise)
            } else {
                do {
                    try loop.execute { if !promise.isCompleted { start(promise) } }
                } catch {
                    promise.fail(error)
                }
            }
        }
    } onCancel: {
        promise.cancel()
    }
}

/// Runs `start` on the calling thread with a fresh promise (for work handed to threads that are not a
/// loop, such as memcached's workers) and waits for it without blocking a thread. Same guarantees as
/// ``withLoopPromise(on:_:)``: resumed exactly once, promptly with `CancellationError` on cancellation.
@inlinable
package func withPromise<T: Sendable>(_ start: (LoopPromise<T>) -> Void) async throws -> T {
    try await withPromise(waiterLoop: nil, start)
}

/// ``withPromise(_:)`` for work that a loop completes: `start` runs on the calling thread and hands
/// the promise to the loop itself (no closure per call). If the caller runs on `waiterLoop`'s own
/// thread (an actor or task executor on it), its resumption is queued on the loop in place instead
/// of going through the end-of-turn batch. Cancellation is reported on the cancelling thread, to a
/// ``LoopPromiseCanceller`` registered with ``LoopPromise/onCancel(_:)-(any LoopPromiseCanceller)``.
@inlinable
package func withPromise<T: Sendable>(waiterLoop: (any TandemEventLoop)?, _ start: (LoopPromise<T>) -> Void) async throws -> T {
    let promise = LoopPromise<T>(loop: nil)
    return try await withTaskCancellationHandler {
        try await withUnsafeThrowingContinuation { (c: UnsafeContinuation<T, any Error>) in
            if promise.install(c, waiterOnLoop: waiterLoop?.inEventLoop ?? false) { start(promise) }
        }
    } onCancel: {
        promise.cancel()
    }
}

/// Continuations completed during one turn of an epoll loop: resumed together at the end of the turn.
/// A lone one is resumed on the loop thread, as it would have been at once; several are handed to the
/// global executor in a single hop, so that the loop thread (the busy one under load) does not pay one
/// wake-up of a cooperative thread per completion. Each continuation is still resumed exactly once.
/// The batch holds the completed promises with a capture-free resume function each (nothing allocated
/// per completion beyond the array slot).
@usableFromInline
final class ResumeBatch {
    private var items: [DeferredResume] = []
    private static let slot = ThreadSlot()

    /// The batch of the loop running on this thread, if it batches.
    @usableFromInline
    static var current: ResumeBatch? {
        slot.value.map { Unmanaged<ResumeBatch>.fromOpaque($0).takeUnretainedValue() }
    }

    /// Makes this the current thread's batch (the loop thread calls it when it starts).
    func install() { ResumeBatch.slot.set(Unmanaged.passUnretained(self).toOpaque()) }

    /// Resumes what is left and stops batching on this thread (the loop thread calls it when it ends).
    func uninstall() {
        flush()
        ResumeBatch.slot.set(nil)
    }

    @usableFromInline
    func add(_ promise: any AnyObject & Sendable, _ resume: @escaping @Sendable (AnyObject) -> Void) {
        items.append(DeferredResume(promise: promise, resume: resume))
    }

    /// Resumes what the turn completed.
    func flush() {
        guard !items.isEmpty else { return }
        if items.count == 1 {
            let item = items[0]
            items.removeAll(keepingCapacity: true)
            item.run()
            return
        }
        let batch = HandedBatch(items: items)
        items = []
        items.reserveCapacity(batch.items.count)
        DispatchQueue.global().async { for item in batch.items { item.run() } }
    }
}

/// A batch of completed promises handed to another thread to resume.
struct HandedBatch: Sendable {
    let items: [DeferredResume]
}
