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

/// `text` without leading and trailing spaces and tabs.
func trimmed(_ text: String) -> String {
    var s = Substring(text)
    while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
    while let l = s.last, l == " " || l == "\t" { s.removeLast() }
    return String(s)
}
