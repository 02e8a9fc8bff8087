import CoreMetrics
import TandemLoop
import Tracing

import Foundation

/// A backend that can be named in settings.
@_spi(Backend) public struct BackendEntry: Sendable {
    /// The short name (`redis`).
    public let name: String
    /// Other names that select it, such as Django's dotted class path.
    public let aliases: [String]
    /// The OPTIONS it understands (upper case).
    public let optionNames: Set<String>
    /// Builds the backend from validated settings.
    public let make: @Sendable (BackendConfiguration) throws -> any CacheBackend

    /// Describes a backend for the registry.
    public init(name: String, aliases: [String] = [], optionNames: Set<String> = [],
                make: @escaping @Sendable (BackendConfiguration) throws -> any CacheBackend) {
        self.name = name
        self.aliases = aliases
        self.optionNames = optionNames
        self.make = make
    }
}
