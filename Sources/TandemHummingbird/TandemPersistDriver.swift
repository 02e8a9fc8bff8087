#if HummingbirdAdapter
import Foundation
import Hummingbird
import Tandem
import TandemNIO

/// Hummingbird's `PersistDriver` on any Tandem cache, so that Hummingbird's sessions (and anything
/// else built on persist) run on Redis, memcached or LocMem with a settings change.
///
/// It keeps the driver contract exactly, as Hummingbird's `MemoryPersistDriver` does:
/// - `create` on a key that exists throws `PersistError.duplicate` (one atomic `add`);
/// - `set` with `expires: nil` keeps the expiry the key already has;
/// - `getWithTTL` returns the time left;
/// - reading a value as a type it does not decode as throws `PersistError.invalidConversion`.
///
/// Values are stored as JSON behind a small header holding the expiry (so that `set` can keep it and
/// `getWithTTL` can report it on every backend). Cache failures are Tandem's typed errors.
public struct TandemPersistDriver: PersistDriver {
    /// The cache that holds the values.
    public let cache: Tandem.Cache

    /// A driver on `cache`. Installs the guard on NIO's loop threads (`NIOLoopGuard`).
    public init(cache: Tandem.Cache) {
        self.cache = cache
        NIOLoopGuard.install()
    }

    public func create<Object: Codable & Sendable>(key: String, value: Object, expires: Duration?) async throws {
        let entry = try PersistEntry.encode(value, expiresAt: expires.map { PersistEntry.now() + $0.seconds })
        guard try await cache.async.add(key, entry, timeout: PersistEntry.timeout(expires)) else { throw PersistError.duplicate }
    }

    public func set<Object: Codable & Sendable>(key: String, value: Object, expires: Duration?) async throws {
        var expiresAt = expires.map { PersistEntry.now() + $0.seconds }
        if expires == nil, let old = try await cache.async.get(key) as [UInt8]?, let kept = PersistEntry.expiry(of: old),
           kept > PersistEntry.now() {
            expiresAt = kept
        }
        let entry = try PersistEntry.encode(value, expiresAt: expiresAt)
        let timeout: CacheTimeout = expiresAt.map { .seconds($0 - PersistEntry.now()) } ?? .never
        try await cache.async.set(key, entry, timeout: timeout)
    }

    public func get<Object: Codable & Sendable>(key: String, as type: Object.Type) async throws -> Object? {
        try await getWithTTL(key: key, as: type)?.object
    }

    public func getWithTTL<Object: Codable & Sendable>(key: String, as type: Object.Type) async throws -> (object: Object, ttl: Duration?)? {
        let bytes: [UInt8]?
        do {
            bytes = try await cache.async.get(key)
        } catch let error as CacheError where error.code == .decodingFailed {
            throw PersistError.invalidConversion  // stored by someone else, as something that is not bytes
        }
        guard let bytes else { return nil }
        return try PersistEntry.decode(bytes, as: type)
    }

    public func remove(key: String) async throws {
        try await cache.async.delete(key, failOpen: false)
    }
}

/// The stored form: `TPD1`, the expiry (seconds since 1970 as a Double's bits; all ones for none),
/// then the value as JSON.
enum PersistEntry {
    static let magic: [UInt8] = Array("TPD1".utf8)
    static let never = UInt64.max

    static func now() -> Double { Date().timeIntervalSince1970 }

    static func timeout(_ expires: Duration?) -> CacheTimeout {
        expires.map { .seconds($0.seconds) } ?? .never
    }

    static func encode<Object: Encodable>(_ value: Object, expiresAt: Double?) throws -> [UInt8] {
        var out = magic
        withUnsafeBytes(of: (expiresAt.map { $0.bitPattern } ?? never).littleEndian) { out += $0 }
        out += try JSONEncoder().encode(value)
        return out
    }

    /// The expiry in `bytes`, if they are an entry and it has one.
    static func expiry(of bytes: [UInt8]) -> Double? {
        guard bytes.count >= 12, bytes[0..<4].elementsEqual(magic) else { return nil }
        let bits = bytes[4..<12].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return bits == never ? nil : Double(bitPattern: bits)
    }

    /// The value and time left; nil once expired; `invalidConversion` for another type or foreign bytes.
    static func decode<Object: Decodable>(_ bytes: [UInt8], as type: Object.Type) throws -> (object: Object, ttl: Duration?)? {
        guard bytes.count >= 12, bytes[0..<4].elementsEqual(magic) else { throw PersistError.invalidConversion }
        let expiresAt = expiry(of: bytes)
        let left = expiresAt.map { $0 - now() }
        if let left, left <= 0 { return nil }
        let object: Object
        do {
            object = try JSONDecoder().decode(Object.self, from: Data(bytes[12...]))
        } catch {
            throw PersistError.invalidConversion
        }
        return (object, left.map { .milliseconds(Int64(($0 * 1000).rounded())) })
    }
}

extension Duration {
    /// The duration in seconds, with its fraction.
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
#endif
