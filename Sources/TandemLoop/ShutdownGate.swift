import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Counts the calls in flight through a service and refuses new ones once it is closed, so that a
/// graceful shutdown can wait for what is running and nothing new starts.
///
/// The count is split over eight counters, each on a cache line of its own, and a thread uses the one
/// its identity picks: threads entering at once on different cores seldom write the same line. One
/// atomic add to enter and one to leave (on the same counter); the lowest bit of every counter is the
/// closed flag, set on all of them by ``close()``.
package final class ShutdownGate: Sendable {
    @usableFromInline let stripes: [Stripe] = (0..<8).map { _ in Stripe() }

    /// One counter, padded so that two stripes never share a cache line.
    package final class Stripe: Sendable {
        @usableFromInline let state = Atomic<Int>(0)
        private let padding = (0, 0, 0, 0, 0, 0, 0, 0)
        init() {}
    }

    package init() {}

    /// The calling thread's counter.
    @inlinable
    package var stripe: Stripe {
        let id = UInt(pthread_self())
        return stripes[Int(truncatingIfNeeded: (id &* 0x9E37_79B9_7F4A_7C15) >> 61)]
    }

    /// Admits a call (a stripe to ``leave(_:)``), or refuses it because the gate is closed (nil).
    @inlinable
    package func enter() -> Stripe? {
        let s = stripe
        if s.state.add(2, ordering: .acquiring).newValue & 1 != 0 {
            s.state.subtract(2, ordering: .releasing)
            return nil
        }
        return s
    }

    /// Ends a call that ``enter()`` admitted, on the counter it entered (a task may resume on another
    /// thread).
    @inlinable
    package func leave(_ stripe: Stripe) { stripe.state.subtract(2, ordering: .releasing) }

    /// Refuses every later call.
    package func close() {
        for s in stripes { s.state.bitwiseOr(1, ordering: .acquiringAndReleasing) }
    }

    /// True once ``close()`` was called.
    @inlinable
    package var isClosed: Bool { stripes[0].state.load(ordering: .acquiring) & 1 != 0 }

    /// Calls admitted and not yet ended.
    package var inFlight: Int { stripes.reduce(0) { $0 + ($1.state.load(ordering: .acquiring) >> 1) } }

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
