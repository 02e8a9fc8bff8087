

/// Nanoseconds on the monotonic clock (`CLOCK_MONOTONIC`): for deadlines and timeouts everywhere in Tandem.
@inlinable @inline(__always)
package func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

extension Duration {
    /// The duration in whole nanoseconds, clamped at zero.
    var clampedNanoseconds: UInt64 {
        let c = components
        if c.seconds < 0 { return 0 }
        let ns = c.seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if ns.overflow { return UInt64.max / 2 }
        return UInt64(max(0, ns.partialValue + c.attoseconds / 1_000_000_000))
    }
}

#if canImport(Glibc)
import Glibc
#endif
