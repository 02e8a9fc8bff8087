import Foundation
import ServiceLifecycle
import Synchronization

/// Identifies a registered descriptor watch, returned by ``TandemEventLoop/watch(_:events:callback:)``.
public struct WatchID: Hashable, Sendable {
    /// The loop-unique number of the watch.
    public let raw: UInt64
    /// Wraps a raw watch number (loops create these; users only pass them back).
    public init(raw: UInt64) { self.raw = raw }
}
