import CoreMetrics
import TandemLoop
import Tracing

import Foundation

/// What a backend factory receives: the validated settings of one alias.
@_spi(Backend) public struct BackendConfiguration: Sendable {
    /// The alias being built (for errors).
    public let alias: String
    /// The LOCATION entries.
    public let location: [String]
    /// The OPTIONS, with typed accessors whose errors name the alias and option.
    public let options: BackendOptions
    /// The loop that socket-driven backends must use (nil: ``loopGroup``'s loops, or the default group's).
    public let loop: (any TandemEventLoop)?
    /// The loops socket-driven backends spread their connections over when no single ``loop`` is given
    /// (nil: `EventLoops.group`).
    public let loopGroup: TandemEventLoopGroup?
    /// The cache's KEY_PREFIX, which starts every key the backend is given (`KEY_PREFIX:VERSION:key`);
    /// nil when a KEY_FUNCTION makes the keys, so that nothing is known about how they start.
    public let keyPrefix: String?
    /// Where a backend's own metrics go (nil: `MetricsSystem.factory`), as for the cache's.
    public let metricsFactory: (any MetricsFactory)?

    /// Creates a configuration (the registry does this).
    public init(alias: String, location: [String], options: BackendOptions, loop: (any TandemEventLoop)?, loopGroup: TandemEventLoopGroup? = nil,
                keyPrefix: String? = nil, metricsFactory: (any MetricsFactory)? = nil) {
        self.keyPrefix = keyPrefix
        self.metricsFactory = metricsFactory
        self.alias = alias
        self.location = location
        self.options = options
        self.loop = loop
        self.loopGroup = loopGroup
    }

    /// The loops to use: ``loop`` alone when given, else ``loopGroup``'s, else the process-wide
    /// group's (which this starts on first use).
    public var loops: [any TandemEventLoop] {
        if let loop { return [loop] }
        return (loopGroup ?? EventLoops.group).loops
    }

    /// The first of ``loops``, for a backend that runs on one loop, without starting the default
    /// group's other loops (its first is `EventLoops.shared`).
    public var firstLoop: any TandemEventLoop {
        loop ?? loopGroup?.loops[0] ?? EventLoops.shared
    }

    /// An ``CacheError/invalidSetting(alias:field:reason:)`` for the LOCATION.
    public func locationError(_ reason: String) -> CacheError {
        .invalidSetting(alias: alias, field: "LOCATION", reason: reason)
    }
}
