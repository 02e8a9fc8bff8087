import Dispatch
import Synchronization

/// The `getOrSet` computations in progress on one cache, one per key: concurrent callers of a key,
/// blocking or async, share one run of the producer (Go's `singleflight`). The first caller leads the
/// flight; the others wait for its outcome and decode the shared stored value as their own type.
final class SingleFlights: Sendable {
    private let flights = Mutex<[String: Flight]>([:])

    /// What a caller of `join` is to do.
    enum Role {
        /// Compute the value, then call ``finish(_:_:_:)`` exactly once.
        case leader(Flight)
        /// Wait for the flight's outcome.
        case waiter(Flight)
    }

    /// Leads a new flight for `key`, or joins the one in progress.
    func join(_ key: String) -> Role {
        flights.locked { f in
            if let existing = f[key] { return .waiter(existing) }
            let flight = Flight()
            f[key] = flight
            return .leader(flight)
        }
    }

    /// Ends the leader's flight: later callers start a new one, and the waiters get `outcome`.
    func finish(_ key: String, _ flight: Flight, _ outcome: Flight.Outcome) {
        flights.locked { f in
            if f[key] === flight { f[key] = nil }
        }
        flight.complete(outcome)
    }

    /// Flights in progress (for tests).
    var count: Int { flights.locked { $0.count } }
}

/// One shared computation: completed once by its leader; every waiter, async or blocking, is woken
/// exactly once with the outcome (or, an async waiter whose task is cancelled, at once without it).
final class Flight: Sendable {
    /// How a flight ended, as its waiters see it.
    enum Outcome: Sendable {
        /// The value the leader stored (or computed), as stored bytes: each waiter decodes its own type.
        case value(StoredValue)
        /// The leader's producer or the cache failed: every waiter gets the same error.
        case failed(any Error)
        /// The leader was cancelled: its waiters try again (one of them leads the next flight), so a
        /// cancelled leader fails nobody but itself.
        case abandoned
        /// This waiter's own task was cancelled while it waited.
        case waiterCancelled
    }

    private enum Slot {
        case waiting(UnsafeContinuation<Outcome, Never>)
        case cancelledBeforeWaiting
    }

    private struct State {
        var outcome: Outcome?
        var waiters: [UInt64: Slot] = [:]
        var nextWaiter: UInt64 = 0
        var blocking: [DispatchSemaphore] = []
    }

    private let state = Mutex(State())

    /// Wakes every waiter with `outcome`. Only the first call counts.
    func complete(_ outcome: Outcome) {
        let (continuations, semaphores) = state.locked { s -> ([UnsafeContinuation<Outcome, Never>], [DispatchSemaphore]) in
            guard s.outcome == nil else { return ([], []) }
            s.outcome = outcome
            let cs = s.waiters.values.compactMap { slot -> UnsafeContinuation<Outcome, Never>? in
                if case .waiting(let c) = slot { return c }
                return nil
            }
            defer { s.waiters = [:]; s.blocking = [] }
            return (cs, s.blocking)
        }
        for c in continuations { c.resume(returning: outcome) }
        for sem in semaphores { sem.signal() }
    }

    /// Waits for the outcome without blocking a thread; a cancelled task stops waiting at once.
    func wait() async -> Outcome {
        let id = state.locked { s -> UInt64 in
            s.nextWaiter += 1
            return s.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withUnsafeContinuation { (c: UnsafeContinuation<Outcome, Never>) in
                let now = state.locked { s -> Outcome? in
                    if let o = s.outcome { return o }
                    if case .cancelledBeforeWaiting? = s.waiters[id] {
                        s.waiters[id] = nil
                        return .waiterCancelled
                    }
                    s.waiters[id] = .waiting(c)
                    return nil
                }
                if let now { c.resume(returning: now) }
            }
        } onCancel: {
            let c = state.locked { s -> UnsafeContinuation<Outcome, Never>? in
                guard s.outcome == nil else { return nil }  // `complete` resumes (or resumed) it
                if case .waiting(let c)? = s.waiters[id] {
                    s.waiters[id] = nil
                    return c
                }
                s.waiters[id] = .cancelledBeforeWaiting
                return nil
            }
            c?.resume(returning: .waiterCancelled)
        }
    }

    /// Waits for the outcome on the calling thread (the blocking face).
    func waitBlocking() -> Outcome {
        let sem = DispatchSemaphore(value: 0)
        if let o = state.locked({ s -> Outcome? in
            if let o = s.outcome { return o }
            s.blocking.append(sem)
            return nil
        }) {
            return o
        }
        sem.wait()
        return state.locked { $0.outcome } ?? .abandoned
    }
}
