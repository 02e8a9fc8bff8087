import Synchronization

/// Counts the calls in flight through a service and refuses new ones once it is closed, so that a
/// graceful shutdown can wait for what is running and nothing new starts. One atomic add to enter and
/// one to leave; the lowest bit of the counter is the closed flag.
package final class ShutdownGate: Sendable {
    @usableFromInline let state = Atomic<Int>(0)

    package init() {}

    /// Admits a call (true), or refuses it because the gate is closed (false). A true must be
    /// followed by exactly one ``leave()``.
    @inlinable
    package func enter() -> Bool {
        if state.add(2, ordering: .acquiring).newValue & 1 != 0 {
            state.subtract(2, ordering: .releasing)
            return false
        }
        return true
    }

    /// Ends a call that ``enter()`` admitted.
    @inlinable
    package func leave() { state.subtract(2, ordering: .releasing) }

    /// Refuses every later call.
    package func close() { state.bitwiseOr(1, ordering: .acquiringAndReleasing) }

    /// True once ``close()`` was called.
    @inlinable
    package var isClosed: Bool { state.load(ordering: .acquiring) & 1 != 0 }

    /// Calls admitted and not yet ended.
    package var inFlight: Int { state.load(ordering: .acquiring) >> 1 }

    /// Waits until no call is in flight, `limit` has passed, or the waiting task is cancelled;
    /// returns how many calls were still in flight then. Polls every 2 ms: a shutdown is rare, and
    /// the calls themselves pay nothing for it.
    package func drain(within limit: Duration) async -> Int {
        let clock = ContinuousClock()
        let deadline = clock.now + limit
        while inFlight > 0, clock.now < deadline, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(2))
        }
        return inFlight
    }
}
