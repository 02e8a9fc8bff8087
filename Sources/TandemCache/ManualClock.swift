import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A clock for tests: starts at 1000 s and moves only through ``advance(by:)``.
public final class ManualClock: Sendable {
    private let value = Mutex<Double>(1000)
    /// Creates a manual clock.
    public init() {}
    /// The current reading in seconds.
    public var now: Double { value.locked { $0 } }
    /// Moves the clock forward.
    public func advance(by seconds: Double) { value.locked { $0 += seconds } }
}
