import Foundation
import ServiceLifecycle
import Synchronization

/// Identifies a scheduled timer, returned by ``TandemEventLoop/schedule(after:_:)``.
public struct TimerID: Hashable, Sendable {
    /// The loop-unique number of the timer.
    public let raw: UInt64
    /// Wraps a raw timer number (loops create these; users only pass them back).
    public init(raw: UInt64) { self.raw = raw }
}
