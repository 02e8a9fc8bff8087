import Foundation
import ServiceLifecycle
import Synchronization

/// Readiness interest for a watched file descriptor.
public struct IOEvents: OptionSet, Sendable, Hashable {
    /// The event bits.
    public let rawValue: UInt8
    /// Creates a set of events from its raw bits.
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// The descriptor has data to read (or the peer closed it).
    public static let read = IOEvents(rawValue: 1)
    /// The descriptor can accept more data.
    public static let write = IOEvents(rawValue: 2)
    /// An error or hang-up was reported on the descriptor.
    public static let error = IOEvents(rawValue: 4)
}
