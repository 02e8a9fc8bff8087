import Foundation
import ServiceLifecycle
import Synchronization

/// Identifies a shutdown hook, returned by ``TandemEventLoop/onShutdown(_:)``.
public struct ShutdownHookID: Hashable, Sendable {
    /// The loop-unique number of the hook.
    public let raw: UInt64
    /// Wraps a raw hook number (loops create these; users only pass them back).
    public init(raw: UInt64) { self.raw = raw }
}
