/// How long a cache entry lives.
///
/// Django's rules: ``default`` takes the cache's TIMEOUT setting (300 s unless set), ``never`` stores
/// forever, and a number of seconds of 0 or less expires the key at once (a `set` stores nothing; an
/// `add` stores nothing and returns whether the key was absent, as Django's backends do). Fractional seconds are accepted; very long timeouts (over 30 days) work.
public enum CacheTimeout: Sendable, Hashable, CustomStringConvertible {
    /// The cache's configured default timeout.
    case `default`
    /// Never expires.
    case never
    /// Expires after this many seconds; 0 or less means "expire now".
    case seconds(Double)

    /// A timeout of `ms` milliseconds.
    public static func milliseconds(_ ms: Int) -> CacheTimeout { .seconds(Double(ms) / 1000) }

    /// A timeout of `m` minutes.
    public static func minutes(_ m: Double) -> CacheTimeout { .seconds(m * 60) }

    /// The timeout as written in settings and logs.
    public var description: String {
        switch self {
        case .default: return "default"
        case .never: return "never"
        case .seconds(let s): return "\(s)s"
        }
    }
}

/// A timeout after the front resolved `.default` and the expire-now rule: what a backend receives.
@_spi(Backend) public enum CacheExpiry: Sendable, Hashable {
    /// Keep the entry until it is deleted or evicted.
    case never
    /// Keep the entry for this many seconds (always greater than zero).
    case after(seconds: Double)

    /// The lifetime in whole milliseconds, rounded up so that a positive timeout never becomes 0.
    public var milliseconds: Int64? {
        switch self {
        case .never: return nil
        case .after(let s):
            let ms = (s * 1000).rounded(.up)
            return ms >= Double(Int64.max) ? Int64.max : max(1, Int64(ms))
        }
    }
}
