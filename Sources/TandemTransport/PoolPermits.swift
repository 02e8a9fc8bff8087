import Dispatch

/// The permits of a bounded pool of connections or handles: one per member, taken before a member is
/// borrowed and given back after.
///
/// The wait for a permit lasts the whole timeout, measured on `ContinuousClock`: a dispatch
/// semaphore's timed wait may return a little before its deadline (248.6 ms of a 250 ms wait was
/// seen under load), so an early return waits again for what is left.
package struct PoolPermits: Sendable {
    private let semaphore: DispatchSemaphore

    /// Permits for a pool of `count` members.
    package init(count: Int) {
        semaphore = DispatchSemaphore(value: count)
    }

    /// Takes a permit, waiting at most `seconds` (and at least that long before giving up).
    /// - Returns: `false` when no permit came free in time.
    package func take(waitingAtMost seconds: Double) -> Bool {
        let deadline = ContinuousClock.now + .nanoseconds(Int64(max(0, seconds) * 1e9))
        while true {
            let (wholeSeconds, attoseconds) = ContinuousClock.now.duration(to: deadline).components
            let nanoseconds = wholeSeconds * 1_000_000_000 + attoseconds / 1_000_000_000
            if nanoseconds <= 0 { return semaphore.wait(timeout: .now()) == .success }
            if semaphore.wait(timeout: .now() + .nanoseconds(Int(nanoseconds))) == .success { return true }
        }
    }

    /// Takes a permit only if one is free now.
    package func takeIfFree() -> Bool {
        semaphore.wait(timeout: .now()) == .success
    }

    /// Gives a permit back.
    package func giveBack() {
        semaphore.signal()
    }
}
