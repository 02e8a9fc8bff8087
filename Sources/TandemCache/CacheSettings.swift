import CoreMetrics
import TandemLoop
import Tracing

import Foundation

/// One entry of the cache registry, like one entry of Django's `CACHES`.
public struct CacheSettings: Sendable, CustomStringConvertible {
    /// A backend name (`locmem`, `dummy`, `redis`, `memcached`) or Django's dotted name for it.
    public var backend: String
    /// Where the backend lives: URLs or `host:port` entries, or the LocMem store name.
    public var location: [String]
    /// The default timeout (Django's TIMEOUT; `.never` for `None`).
    public var timeout: CacheTimeout
    /// Django's KEY_PREFIX.
    public var keyPrefix: String
    /// Django's VERSION.
    public var version: Int
    /// Backend options (Django's OPTIONS). Every backend also accepts `ASYNC_UNSAFE`
    /// (`error`, `warn`, `allow`): the async-safety guard's policy for this cache; `IGNORE_EXCEPTIONS`
    /// (fail open), `CIRCUIT_BREAKER_THRESHOLD` (consecutive server failures that open the breaker; 0
    /// or absent: none) and `CIRCUIT_BREAKER_COOLDOWN` (seconds, 5): see ``CacheResilience``.
    public var options: [String: SettingValue]
    /// Replaces the default key making (Django's KEY_FUNCTION).
    public var keyFunction: KeyFunction?
    /// Encodes values that are not stored natively.
    public var codec: any CacheCodec
    /// Where the cache's counters and latency timer go (nil: `MetricsSystem.factory`).
    public var metricsFactory: (any MetricsFactory)?
    /// Where the cache's spans go (nil: the tracer bootstrapped with `InstrumentationSystem`, if any).
    public var tracer: (any Tracer)?

    /// Creates settings; every argument has Django's default.
    public init(
        backend: String = "locmem", location: [String] = [], timeout: CacheTimeout = .seconds(300),
        keyPrefix: String = "", version: Int = 1, options: [String: SettingValue] = [:],
        keyFunction: KeyFunction? = nil, codec: any CacheCodec = JSONCacheCodec(),
        metricsFactory: (any MetricsFactory)? = nil
    ) {
        self.metricsFactory = metricsFactory
        self.backend = backend
        self.location = location
        self.timeout = timeout
        self.keyPrefix = keyPrefix
        self.version = version
        self.options = options
        self.keyFunction = keyFunction
        self.codec = codec
    }

    /// The settings with secrets redacted.
    public var description: String {
        let opts = options.sorted { $0.key < $1.key }
            .map { "\($0.key): \(Redaction.isSecret($0.key) ? "\"***\"" : $0.value.description)" }
        return "CacheSettings(backend: \(backend), location: \(location.map(Redaction.location)), timeout: \(timeout), "
            + "keyPrefix: \"\(keyPrefix)\", version: \(version), options: [\(opts.joined(separator: ", "))])"
    }

    /// The fields of a Django `CACHES` entry that Tandem understands.
    static let djangoFields: Set<String> = ["BACKEND", "LOCATION", "TIMEOUT", "KEY_PREFIX", "VERSION", "OPTIONS"]

    /// Parses one entry of Django's `CACHES` shape. Errors name the alias and the field.
    public static func parse(alias: String, _ value: SettingValue) throws -> CacheSettings {
        guard case .dict(let fields) = value else {
            throw CacheError.invalidSetting(alias: alias, field: "(entry)", reason: "expected an object, got \(value.typeName)")
        }
        for name in fields.keys where !djangoFields.contains(name) {
            let hint = name == "KEY_FUNCTION" ? " (set keyFunction in Swift settings)" : ""
            throw CacheError.invalidSetting(
                alias: alias, field: name,
                reason: "unknown field\(hint); known fields: \(djangoFields.sorted().joined(separator: ", "))")
        }
        var s = CacheSettings()
        switch fields["BACKEND"] {
        case .string(let b): s.backend = b
        case nil: throw CacheError.invalidSetting(alias: alias, field: "BACKEND", reason: "missing")
        case let other?: throw CacheError.invalidSetting(alias: alias, field: "BACKEND", reason: "expected a string, got \(other.typeName)")
        }
        if let loc = fields["LOCATION"] { s.location = try parseLocation(alias: alias, loc) }
        if let t = fields["TIMEOUT"] { s.timeout = try parseTimeout(alias: alias, t) }
        switch fields["KEY_PREFIX"] {
        case .string(let p): s.keyPrefix = p
        case nil: break
        case let other?: throw CacheError.invalidSetting(alias: alias, field: "KEY_PREFIX", reason: "expected a string, got \(other.typeName)")
        }
        switch fields["VERSION"] {
        case .int(let v): s.version = v
        case nil: break
        case let other?: throw CacheError.invalidSetting(alias: alias, field: "VERSION", reason: "expected an integer, got \(other.typeName) \(other)")
        }
        switch fields["OPTIONS"] {
        case .dict(let o): s.options = o
        case nil, .null: break
        case let other?: throw CacheError.invalidSetting(alias: alias, field: "OPTIONS", reason: "expected an object, got \(other.typeName)")
        }
        return s
    }

    /// Schemes whose one URL names several hosts (`redis+sentinel://a:1,b:2/service`): a LOCATION
    /// string with one of them is not split.
    package static let multiHostSchemes: Set<String> = ["redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"]

    /// Splits a LOCATION string the way Django does, on `;` and `,` (several servers), except a URL
    /// whose scheme names several hosts in one location, which stays whole.
    package static func splitLocation(_ s: String) -> [String] {
        let t = trimmed(s)
        if let end = t.range(of: "://"), multiHostSchemes.contains(t[..<end.lowerBound].lowercased()) { return [t] }
        return t.split(whereSeparator: { $0 == ";" || $0 == "," }).map { trimmed(String($0)) }.filter { !$0.isEmpty }
    }

    /// LOCATION: a string (split on `;` or `,`, except a sentinel or cluster URL) or a list of strings.
    static func parseLocation(alias: String, _ value: SettingValue) throws -> [String] {
        switch value {
        case .string(let s):
            return splitLocation(s)
        case .list(let items):
            return try items.map {
                guard case .string(let s) = $0 else {
                    throw CacheError.invalidSetting(alias: alias, field: "LOCATION", reason: "list items must be strings, got \($0.typeName)")
                }
                return trimmed(s)
            }
        case .null:
            return []
        default:
            throw CacheError.invalidSetting(alias: alias, field: "LOCATION", reason: "expected a string or a list of strings, got \(value.typeName)")
        }
    }

    /// TIMEOUT: seconds as a number, or null for never.
    static func parseTimeout(alias: String, _ value: SettingValue) throws -> CacheTimeout {
        switch value {
        case .int(let i): return .seconds(Double(i))
        case .double(let d) where d.isFinite: return .seconds(d)
        case .null: return .never
        default:
            throw CacheError.invalidSetting(alias: alias, field: "TIMEOUT", reason: "expected a number of seconds or null, got \(value.typeName) \(value)")
        }
    }
}

/// What a backend factory receives: the validated settings of one alias.
public struct BackendConfiguration: Sendable {
    /// The alias being built (for errors).
    public let alias: String
    /// The LOCATION entries.
    public let location: [String]
    /// The OPTIONS, with typed accessors whose errors name the alias and option.
    public let options: BackendOptions
    /// The loop that socket-driven backends must use (nil: ``loopGroup``'s loops, or the default group's).
    public let loop: (any TandemEventLoop)?
    /// The loops socket-driven backends spread their connections over when no single ``loop`` is given
    /// (nil: ``TandemLoop/EventLoops/group``).
    public let loopGroup: TandemEventLoopGroup?

    /// Creates a configuration (the registry does this).
    public init(alias: String, location: [String], options: BackendOptions, loop: (any TandemEventLoop)?, loopGroup: TandemEventLoopGroup? = nil) {
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
    /// group's other loops (its first is ``TandemLoop/EventLoops/shared``).
    public var firstLoop: any TandemEventLoop {
        loop ?? loopGroup?.loops[0] ?? EventLoops.shared
    }

    /// An ``CacheError/invalidSetting(alias:field:reason:)`` for the LOCATION.
    public func locationError(_ reason: String) -> CacheError {
        .invalidSetting(alias: alias, field: "LOCATION", reason: reason)
    }
}

/// OPTIONS of one cache with typed, checked accessors.
public struct BackendOptions: Sendable {
    /// The alias the options belong to.
    public let alias: String
    /// The raw options.
    public let values: [String: SettingValue]

    /// Wraps raw options.
    public init(alias: String, values: [String: SettingValue]) {
        self.alias = alias
        self.values = values
    }

    private func error(_ name: String, _ reason: String) -> CacheError {
        .invalidSetting(alias: alias, field: "OPTIONS.\(name)", reason: reason)
    }

    /// An integer option within `range`.
    public func int(_ name: String, default d: Int, range: ClosedRange<Int> = Int.min...Int.max) throws -> Int {
        guard let v = values[name] else { return d }
        guard case .int(let i) = v else { throw error(name, "expected an integer, got \(v.typeName) \(v)") }
        guard range.contains(i) else { throw error(name, "\(i) is out of range \(range.lowerBound)...\(range.upperBound)") }
        return i
    }

    /// A number option (integers accepted) within `range`.
    public func double(_ name: String, default d: Double, range: ClosedRange<Double> = -Double.greatestFiniteMagnitude...Double.greatestFiniteMagnitude) throws -> Double {
        guard let v = values[name] else { return d }
        let x: Double
        switch v {
        case .int(let i): x = Double(i)
        case .double(let dd): x = dd
        default: throw error(name, "expected a number, got \(v.typeName) \(v)")
        }
        guard range.contains(x) else { throw error(name, "\(x) is out of range \(range.lowerBound)...\(range.upperBound)") }
        return x
    }

    /// A boolean option.
    public func bool(_ name: String, default d: Bool) throws -> Bool {
        guard let v = values[name] else { return d }
        guard case .bool(let b) = v else { throw error(name, "expected a boolean, got \(v.typeName) \(v)") }
        return b
    }

    /// A string option.
    public func string(_ name: String) throws -> String? {
        guard let v = values[name] else { return nil }
        guard case .string(let s) = v else {
            throw error(name, "expected a string, got \(v.typeName)\(Redaction.isSecret(name) ? "" : " \(v)")")
        }
        return s
    }
}

/// A backend that can be named in settings.
public struct BackendEntry: Sendable {
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

/// Backends by name. Backends register by name, so adding one is one ``register(_:)`` call.
public struct BackendRegistry: Sendable {
    private var entries: [String: BackendEntry] = [:]
    private var names: [String: String] = [:]

    /// Options every backend accepts, handled by the cache front.
    public static let frontOptions: Set<String> = ["ASYNC_UNSAFE", "IGNORE_EXCEPTIONS", "CIRCUIT_BREAKER_THRESHOLD",
                                                   "CIRCUIT_BREAKER_COOLDOWN", "STAMPEDE_LOCK_TIMEOUT", "STAMPEDE_LOCK_WAIT",
                                                   "EARLY_REFRESH_BETA"]

    /// An empty registry.
    public init() {}

    /// LocMem and Dummy, which TandemCache provides.
    public static var builtin: BackendRegistry { builtin(locMemClock: .system) }

    /// LocMem (reading expiry times from `locMemClock`) and Dummy.
    public static func builtin(locMemClock: LocMemClock) -> BackendRegistry {
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
    public mutating func register(_ entry: BackendEntry) {
        entries[entry.name] = entry
        names[entry.name.lowercased()] = entry.name
        for a in entry.aliases { names[a.lowercased()] = entry.name }
    }

    /// The backend selected by `name` (short or dotted, case-insensitive).
    public func entry(named name: String) -> BackendEntry? {
        names[name.lowercased()].flatMap { entries[$0] }
    }

    /// The short names of every registered backend.
    public var knownNames: [String] { entries.keys.sorted() }

    /// Validates `settings` and builds its cache: on `loop` alone when given, else on `loopGroup`'s loops
    /// (nil: ``TandemLoop/EventLoops/group``).
    public func makeCache(alias: String, settings: CacheSettings, loop: (any TandemEventLoop)?, loopGroup: TandemEventLoopGroup? = nil) throws -> Cache {
        guard let entry = entry(named: settings.backend) else {
            throw CacheError.unknownBackend(alias: alias, backend: settings.backend, known: knownNames)
        }
        let allowed = entry.optionNames.union(BackendRegistry.frontOptions)
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
        let backend = try entry.make(BackendConfiguration(alias: alias, location: settings.location, options: options, loop: loop, loopGroup: loopGroup))
        return Cache(alias: alias, backend: backend, timeout: settings.timeout, keyPrefix: settings.keyPrefix,
                     version: settings.version, keyFunction: settings.keyFunction, codec: settings.codec,
                     asyncUnsafePolicy: policy, metricsFactory: settings.metricsFactory, resilience: resilience,
                     tracer: settings.tracer)
    }
}

/// `text` without leading and trailing spaces and tabs.
func trimmed(_ text: String) -> String {
    var s = Substring(text)
    while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
    while let l = s.last, l == " " || l == "\t" { s.removeLast() }
    return String(s)
}
