import Synchronization

/// Work that other threads hand to an object owned by an event loop (a connection), drained on the
/// loop thread by one job per batch: the submissions that arrive while the loop is busy cost one
/// loop job together, not a closure and an inbox entry each.
///
/// The owner calls ``add(_:schedule:)`` from any thread; the first item since the last drain runs
/// `schedule`, which submits the owner's drain job to its loop; the drain job calls ``drain(_:)``.
/// Nothing queued is lost: when the loop is gone (`schedule` throws), every item still queued fails
/// with that error; an item whose task was cancelled before the drain is not started.
///
/// The owners (the Redis and memcached connections) call it with their concrete item types, so that
/// the compiler specializes it and no call looks up generic metadata.
@usableFromInline package final class LoopQueue<Item: LoopQueueItem>: Sendable {
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
    /// throws, every item still queued (this one included) fails with the error, and the queue is
    /// empty and unscheduled again.
    @inlinable
    package func add(_ item: Item, schedule: () throws -> Void) {
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
            for i in left { i.fail(error) }
        }
    }

    /// Starts what is queued, in order, skipping the items already abandoned (loop thread, in the
    /// drain job). Items added from now on schedule a new drain.
    @inlinable
    package func drain(_ start: (Item) -> Void) {
        let batch = take()
        for item in batch where !item.isAbandoned { start(item) }
        recycle(batch)
    }

    /// Takes what is queued; items added from now on schedule a new drain.
    @inlinable
    func take() -> [Item] {
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
    func recycle(_ batch: consuming [Item]) {
        var buffer = batch
        buffer.removeAll(keepingCapacity: true)
        state.locked { s in
            if s.spare.capacity < buffer.capacity { s.spare = buffer }
        }
    }
}

/// An item of a ``LoopQueue``: a piece of work with the promise of the task waiting for it.
@usableFromInline package protocol LoopQueueItem: Sendable {
    /// True when the waiting task no longer wants the work (its promise completed, by cancellation).
    var isAbandoned: Bool { get }
    /// Fails the waiting task (the loop is gone).
    func fail(_ error: any Error)
}
