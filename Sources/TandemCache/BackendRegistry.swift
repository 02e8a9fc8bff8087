import CoreMetrics
import TandemLoop
import Tracing

import Foundation

/// Backends by name. Backends register by name, so adding one is one `register(_:)` call (SPI).
public struct BackendRegistry: Sendable {
    private var entries: [String: BackendEntry] = [:]
    private var names: [String: String] = [:]

    /// Options every backend accepts, handled by the cache front.
    @_spi(Backend) public static let frontOptions: Set<String> = ["ASYNC_UNSAFE", "IGNORE_EXCEPTIONS", "CIRCUIT_BREAKER_THRESHOLD",
                                                   "CIRCUIT_BREAKER_COOLDOWN", "STAMPEDE_LOCK_TIMEOUT", "STAMPEDE_LOCK_WAIT",
                                                   "EARLY_REFRESH_BETA", "SERIALIZER", "COMPRESSOR"]

    /// An empty registry.
    public init() {}

    /// LocMem and Dummy, which TandemCache provides.
    public static var builtin: BackendRegistry { builtin(locMemClock: .system) }

    /// LocMem (reading expiry times from `locMemClock`) and Dummy.
    package static func builtin(locMemClock: LocMemClock) -> BackendRegistry {
        var r = BackendRegistry()
        r.register(BackendEntry(
            name: "locmem", aliases: ["django.core.cache.backends.locmem.LocMemCache"],
            optionNames: ["MAX_ENTRIES", "CULL_FREQUENCY"]
        ) { config in
            LocMemBackend(
                location: config.location.first ?? "",
                maxEntries: try config.options.int("MAX_ENTRIES", default: 300, range: 1...Int.max),
                cullFrequency: try config.options.int("CULL_FREQUENCY", default: 3, range: 0...Int.max),
                clock: locMemClock)
        })
        r.register(BackendEntry(name: "dummy", aliases: ["django.core.cache.backends.dummy.DummyCache"]) { _ in
            DummyBackend()
        })
        return r
    }

    /// Adds (or replaces) a backend under its name and aliases.
    @_spi(Backend) public mutating func register(_ entry: BackendEntry) {
        entries[entry.name] = entry
        names[entry.name.lowercased()] = entry.name
        for a in entry.aliases { names[a.lowercased()] = entry.name }
    }

    /// The backend selected by `name` (short or dotted, case-insensitive).
    @_spi(Backend) public func entry(named name: String) -> BackendEntry? {
        names[name.lowercased()].flatMap { entries[$0] }
    }

    /// The short names of every registered backend.
    public var knownNames: [String] { entries.keys.sorted() }

    /// Validates `settings` and builds its cache: on `loop` alone when given, else on `loopGroup`'s loops
    /// (nil: `EventLoops.group`).
    public func makeCache(alias: String, settings: CacheSettings, loop: (any TandemEventLoop)?, loopGroup: TandemEventLoopGroup? = nil) throws -> Cache {
        guard let entry = entry(named: settings.backend) else {
            throw CacheError.unknownBackend(alias: alias, backend: settings.backend, known: knownNames)
        }
        let allowed = entry.optionNames.union(BackendRegistry.frontOptions)
        if settings.options["NEAR_CACHE"] != nil, !allowed.contains("NEAR_CACHE") {
            throw CacheError.invalidSetting(
                alias: alias, field: "OPTIONS.NEAR_CACHE",
                reason: "a near cache needs a server that tells this process when a key changes (Redis's client tracking); "
                    + "backend '\(entry.name)' cannot, so a local copy could be served stale: use it with the redis backend")
        }
        for name in settings.options.keys where !allowed.contains(name) {
            throw CacheError.invalidSetting(
                alias: alias, field: "OPTIONS.\(name)",
                reason: "unknown option for backend '\(entry.name)'; known options: \(allowed.sorted().joined(separator: ", "))")
        }
        if case .seconds(let s) = settings.timeout, !s.isFinite {
            throw CacheError.invalidSetting(alias: alias, field: "TIMEOUT", reason: "must be finite")
        }
        let options = BackendOptions(alias: alias, values: settings.options)
        var policy: AsyncUnsafePolicy?
        if let raw = try options.string("ASYNC_UNSAFE") {
            guard let p = AsyncUnsafePolicy(settingValue: raw) else {
                throw CacheError.invalidSetting(alias: alias, field: "OPTIONS.ASYNC_UNSAFE", reason: "expected error, warn or allow, got \"\(raw)\"")
            }
            policy = p
        }
        let serializer = try ValueSerializer.parse(try options.string("SERIALIZER"), alias: alias)
        let compressor = try ValueCompressor.parse(try options.string("COMPRESSOR"), alias: alias)
        var lock: StampedeLock?
        if options.values["STAMPEDE_LOCK_TIMEOUT"] != nil {
            let t = try options.double("STAMPEDE_LOCK_TIMEOUT", default: 10, range: 0.001...86_400)
            let w = try options.double("STAMPEDE_LOCK_WAIT", default: t, range: 0...86_400)
            lock = StampedeLock(timeout: .milliseconds(Int(t * 1000)), wait: .milliseconds(Int(w * 1000)))
        } else if options.values["STAMPEDE_LOCK_WAIT"] != nil {
            throw CacheError.invalidSetting(alias: alias, field: "OPTIONS.STAMPEDE_LOCK_WAIT",
                                            reason: "only meaningful with OPTIONS.STAMPEDE_LOCK_TIMEOUT, which turns the lock on")
        }
        let resilience = CacheResilience(
            failOpen: try options.bool("IGNORE_EXCEPTIONS", default: false),
            breakerThreshold: try options.int("CIRCUIT_BREAKER_THRESHOLD", default: 0, range: 0...1_000_000),
            breakerCooldown: .milliseconds(Int(try options.double("CIRCUIT_BREAKER_COOLDOWN", default: 5, range: 0.001...86_400) * 1000)),
            stampedeLock: lock,
            earlyRefreshBeta: options.values["EARLY_REFRESH_BETA"] == nil
                ? nil : try options.double("EARLY_REFRESH_BETA", default: 1, range: 0.000_001...1_000_000))
        let backend = try entry.make(BackendConfiguration(alias: alias, location: settings.location, options: options, loop: loop, loopGroup: loopGroup,
                                                           keyPrefix: settings.keyFunction == nil ? settings.keyPrefix : nil,
                                                           metricsFactory: settings.metricsFactory))
        return Cache(alias: alias, backend: backend, timeout: settings.timeout, keyPrefix: settings.keyPrefix,
                     version: settings.version, keyFunction: settings.keyFunction, codec: settings.codec, serializer: serializer, compressor: compressor,
                     asyncUnsafePolicy: policy, metricsFactory: settings.metricsFactory, resilience: resilience,
                     tracer: settings.tracer)
    }
}
