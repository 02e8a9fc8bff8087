import Synchronization

/// Work that other threads hand to an object owned by an event loop (a connection), drained on the
/// loop thread by one job per batch: the submissions that arrive while the loop is busy cost one
/// loop job together, not a closure and an inbox entry each.
///
/// ``LoopQueueOwner`` puts it to use: ``LoopQueueOwner/submit(_:_:)`` from any thread, the first item
/// since the last drain schedules the owner's drain job on its loop. Nothing queued is lost: when the
/// loop is gone, every item still queued is handed back to fail.
@usableFromInline package final class LoopQueue<Item: Sendable>: Sendable {
    @usableFromInline
    struct State {
        @usableFromInline var items: [Item] = []
        /// The buffer of the previous drain, emptied, kept for its capacity.
        @usableFromInline var spare: [Item] = []
        @usableFromInline var drainQueued = false
        @inlinable init() {}
    }
    @usableFromInline let state: Mutex<State>

    @inlinable package init() { state = Mutex(State()) }

    /// Queues `item` (any thread). If it is the first since the last drain, runs `schedule`; if that
    /// throws, every item still queued (this one included) goes to `stranded` with the error, and the
    /// queue is empty and unscheduled again.
    @inlinable
    package func add(_ item: Item, schedule: () throws -> Void, stranded: (Item, any Error) -> Void) {
        let first = state.locked { s -> Bool in
            s.items.append(item)
            if s.drainQueued { return false }
            s.drainQueued = true
            return true
        }
        guard first else { return }
        do {
            try schedule()
        } catch {
            let left = state.locked { s -> [Item] in
                s.drainQueued = false
                defer { s.items.removeAll() }
                return s.items
            }
            for i in left { stranded(i, error) }
        }
    }

    /// Takes what is queued (loop thread, in the drain job); items added from now on schedule a new
    /// drain. Hand the batch back with ``recycle(_:)`` once handled, for its capacity.
    @inlinable
    package func take() -> [Item] {
        state.locked { s -> [Item] in
            s.drainQueued = false
            var batch = s.spare
            s.spare = []
            swap(&batch, &s.items)
            return batch
        }
    }

    /// Keeps a handled batch's buffer (emptied) for a later drain.
    @inlinable
    package func recycle(_ batch: consuming [Item]) {
        var buffer = batch
        buffer.removeAll(keepingCapacity: true)
        state.locked { s in
            if s.spare.capacity < buffer.capacity { s.spare = buffer }
        }
    }
}

/// A piece of work queued for a loop with the promise it completes.
@usableFromInline package struct QueuedWork<Work: Sendable, Value: Sendable>: Sendable {
    @usableFromInline let work: Work
    @usableFromInline let promise: LoopPromise<Value>
    @inlinable init(_ work: Work, _ promise: LoopPromise<Value>) {
        self.work = work
        self.promise = promise
    }
}

/// An object owned by a loop (a connection) that other threads give work to, each piece with the
/// promise of the task waiting for it: ``submit(_:_:)`` starts it at once on the loop thread, else
/// queues it in ``incoming``, which one loop job drains. A piece whose task was cancelled before the
/// drain is not started; when the loop is gone, queued promises fail with its error
/// (``TandemError/loopShutDown(loop:)``).
package protocol LoopQueueOwner: AnyObject, Sendable {
    associatedtype Work: Sendable
    associatedtype Value: Sendable
    /// The loop whose thread runs ``start(_:_:)``.
    var loop: any TandemEventLoop { get }
    /// Work from other threads, waiting for the loop.
    var incoming: LoopQueue<QueuedWork<Work, Value>> { get }
    /// Starts `work`, which completes `promise` (loop thread).
    func start(_ work: Work, _ promise: LoopPromise<Value>)
}

extension LoopQueueOwner {
    /// Starts `work` at once on the loop thread; from another thread, queues it for the loop's next
    /// drain (the first piece queued since the last drain schedules it).
    @inlinable
    package func submit(_ work: Work, _ promise: LoopPromise<Value>) {
        if loop.inEventLoop {
            start(work, promise)
            return
        }
        incoming.add(QueuedWork(work, promise)) {
            try loop.execute { self.drainIncoming() }
        } stranded: { q, error in
            q.promise.fail(error)  // the loop is gone: nothing queued will start
        }
    }

    /// Starts what other threads queued (loop thread).
    @inlinable
    package func drainIncoming() {
        let batch = incoming.take()
        for q in batch where !q.promise.isCompleted { start(q.work, q.promise) }
        incoming.recycle(batch)
    }
}
