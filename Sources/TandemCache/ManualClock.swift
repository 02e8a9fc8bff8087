import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A clock for tests: starts at 1000 s and moves only through ``advance(by:)``.
package final class ManualClock: Sendable {
    private let value = Mutex<Double>(1000)
    /// Creates a manual clock.
    package init() {}
    /// The current reading in seconds.
    package var now: Double { value.locked { $0 } }
    /// Moves the clock forward.
    package func advance(by seconds: Double) { value.locked { $0 += seconds } }
}
