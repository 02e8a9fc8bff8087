import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A clock the LocMem backend reads expiry times from: the system's monotonic clock, or a manual
/// clock that tests move forward without sleeping.
package enum LocMemClock: Sendable {
    /// The monotonic coarse clock (millisecond resolution, a few nanoseconds to read).
    case system
    /// A clock that only moves when told to.
    case manual(ManualClock)

    /// Seconds since an arbitrary fixed point.
    @inline(__always)
    package func now() -> Double {
        switch self {
        case .system:
            var ts = timespec()
            clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
            return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
        case .manual(let clock):
            return clock.now
        }
    }
}
