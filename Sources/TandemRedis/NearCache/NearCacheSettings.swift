@_spi(Backend) import TandemCache

/// The Redis `NEAR_CACHE` option: a copy of hot values in process memory, kept coherent by the
/// server's client tracking.
struct NearCacheSettings: Sendable, Equatable {
    /// How the server decides which invalidations this process receives.
    enum Mode: String, Sendable {
        /// The server remembers the keys each of this process's reading connections read, and tells
        /// the process when one of them changes (more server memory, fewer messages).
        case tracking
        /// The server tells the process about every change to a key under the cache's key prefix
        /// (no per-key memory on the server; a message for every write under the prefix).
        case broadcast
    }

    var maxEntries = 10_000
    var maxBytes = 64 << 20
    /// The longest a value lives locally, in nanoseconds (a value expires sooner with its key).
    var ttlNanos: UInt64 = 60_000_000_000
    var mode = Mode.tracking

    /// The fields an object may have.
    static let fieldNames: [String] = ["MAX_ENTRIES", "MAX_BYTES", "TTL", "MODE"]

    /// The setting from OPTIONS (nil when it is absent or `false`). `true` takes every default; an
    /// object sets some of them. Anything else, an unknown field or a value out of range is an
    /// ``CacheError/invalidSetting(alias:field:reason:)`` naming it.
    static func parse(_ options: BackendOptions) throws -> NearCacheSettings? {
        guard let raw = options.values["NEAR_CACHE"] else { return nil }
        func invalid(_ field: String, _ reason: String) -> CacheError {
            .invalidSetting(alias: options.alias, field: "OPTIONS.NEAR_CACHE\(field.isEmpty ? "" : ".\(field)")", reason: reason)
        }
        switch raw {
        case .bool(let on): return on ? NearCacheSettings() : nil
        case .dict(let fields):
            for name in fields.keys where !fieldNames.contains(name) {
                throw invalid(name, "unknown field; known fields: \(fieldNames.joined(separator: ", "))")
            }
            let sub = BackendOptions(alias: options.alias, values: fields)
            func rename(_ body: () throws -> Void) throws {
                do { try body() } catch let e as CacheError where e.code == .invalidSetting {
                    throw invalid(String((e.field ?? "").dropFirst("OPTIONS.".count)), e.reason ?? "")
                }
            }
            var s = NearCacheSettings()
            try rename { s.maxEntries = try sub.int("MAX_ENTRIES", default: s.maxEntries, range: 1...100_000_000) }
            try rename { s.maxBytes = try sub.int("MAX_BYTES", default: s.maxBytes, range: 1024...(1 << 40)) }
            try rename { s.ttlNanos = UInt64(try sub.double("TTL", default: 60, range: 0.001...86_400) * 1e9) }
            try rename {
                if let m = try sub.string("MODE") {
                    guard let mode = Mode(rawValue: m) else {
                        throw CacheError.invalidSetting(alias: options.alias, field: "OPTIONS.MODE", reason: "expected \"tracking\" or \"broadcast\", got \"\(m)\"")
                    }
                    s.mode = mode
                }
            }
            return s
        default:
            throw invalid("", "expected true, false or an object with \(fieldNames.joined(separator: ", ")), got \(raw.typeName) \(raw)")
        }
    }
}
