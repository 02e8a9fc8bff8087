import Synchronization

/// Work that other threads hand to an object owned by an event loop (a connection), drained on the
/// loop thread by one job per batch: the submissions that arrive while the loop is busy cost one
/// loop job together, not a closure and an inbox entry each.
///
/// The owner calls ``add(_:schedule:stranded:)`` from any thread; the first item since the last
/// drain runs `schedule`, which submits the owner's drain job to its loop; the drain job calls
/// ``take()``, handles the items and hands the buffer back with ``recycle(_:)``. Nothing queued is
/// lost: when the loop is gone (`schedule` throws), every item still queued is handed back to fail.
///
/// The owners (the Redis and memcached connections) each write their few lines of submit and drain
/// around it with their concrete types: as a protocol extension over the owner, the same lines were
/// not specialized by the compiler, and every call looked up generic metadata.
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
