import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Django's DummyCache: implements the interface and stores nothing. `add` returns true, `get` misses,
/// `incr` reports a missing key.
@_spi(Backend) public final class DummyBackend: NonBlockingCacheBackend {
    /// Creates a dummy backend.
    public init() {}
    /// The dummy accepts any key, warning about ones memcached would refuse.
    public var keyStrictness: KeyStrictness { .lenient }
    /// `dummy://`.
    public var backendDescription: String { "dummy://" }
    /// Always a miss.
    public func get(_ key: String) throws -> StoredValue? { nil }
    /// Always empty.
    public func getMany(_ keys: [String]) throws -> [String: StoredValue] { [:] }
    /// Stores nothing; reports success (so `add` is true).
    public func set(_ key: String, _ value: StoredValue, expiry: CacheExpiry, mode: SetMode) throws -> Bool { true }
    /// Stores nothing; no key fails.
    public func setMany(_ items: [(key: String, value: StoredValue)], expiry: CacheExpiry) throws -> [String] { [] }
    /// Nothing to delete: false.
    public func delete(_ key: String) throws -> Bool { false }
    /// Nothing to delete.
    public func deleteMany(_ keys: [String]) throws {}
    /// Nothing is stored: false.
    public func deleteIfEqual(_ key: String, _ expected: StoredValue) throws -> Bool { false }
    /// Every key is missing: `CacheError.missingKey`.
    public func incr(_ key: String, by delta: Int64) throws -> Int64 { throw CacheError.missingKey(key) }
    /// Nothing to touch: false.
    public func touch(_ key: String, expiry: CacheExpiry) throws -> Bool { false }
    /// Never.
    public func hasKey(_ key: String) throws -> Bool { false }
    /// Nothing to clear.
    public func clear() throws {}
    /// Nothing to close.
    public func close() {}
}
