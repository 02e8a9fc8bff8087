/// The type tag stored with a value (memcached keeps it in the item flags). `untagged` is what a
/// backend reports when it cannot store tags (Redis) or when another client wrote the value: the front
/// then decodes by the type the caller asks for.
@_spi(Backend) public struct ValueKind: RawRepresentable, Sendable, Hashable {
    /// The tag's number (what memcached keeps in the item flags).
    public let rawValue: UInt32
    /// Wraps a raw tag.
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// No tag: decode by the requested type.
    public static let untagged = ValueKind(rawValue: 0)
    /// UTF-8 text.
    public static let string = ValueKind(rawValue: 1)
    /// An integer as decimal text.
    public static let integer = ValueKind(rawValue: 2)
    /// A floating-point number as text.
    public static let double = ValueKind(rawValue: 3)
    /// `true` or `false`.
    public static let bool = ValueKind(rawValue: 4)
    /// Raw bytes (`[UInt8]`).
    public static let bytes = ValueKind(rawValue: 5)
    /// Raw bytes (`Data`).
    public static let data = ValueKind(rawValue: 6)
    /// A `Codable` value encoded by the cache's codec.
    public static let codable = ValueKind(rawValue: 7)
    /// A stored null (`nil`): a value, not a miss.
    public static let null = ValueKind(rawValue: 8)
}

/// A value as a backend stores it: bytes and a type tag.
@_spi(Backend) public struct StoredValue: Sendable, Hashable {
    /// The payload.
    public var bytes: [UInt8]
    /// The type tag (see ``ValueKind``).
    public var kind: ValueKind
    /// True when a near cache in this process answered the read, with no round trip (set by a backend
    /// that keeps one; a traced read says so). Not part of the value: equality and hashing ignore it.
    public var servedFromNearCache = false

    /// Creates a stored value.
    public init(bytes: [UInt8], kind: ValueKind) {
        self.bytes = bytes
        self.kind = kind
    }

    /// The same bytes and kind, whoever answered.
    public static func == (lhs: StoredValue, rhs: StoredValue) -> Bool {
        lhs.bytes == rhs.bytes && lhs.kind == rhs.kind
    }

    /// Hashes the bytes and the kind.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(bytes)
        hasher.combine(kind)
    }

    /// The bytes that stand for a stored null on backends without type tags (Redis). They start with
    /// `0xC1 0x00`, which no UTF-8 text, JSON or decimal number contains, and are long enough that no
    /// value is mistaken for them by chance; a value Tandem stores that happens to equal them is escaped
    /// (see ``untaggedBytes``), so that only a `nil` reads back as a stored null.
    public static let nullBytes: [UInt8] = [0xC1, 0x00] + Array("tandem:null:v2".utf8) + [0x00, 0xC1]

    /// The stored form of `nil`.
    public static let null = StoredValue(bytes: nullBytes, kind: .null)

    /// True when this is a stored null.
    public var isNull: Bool { kind == .null }

    /// The bytes a backend without type tags writes: ``nullBytes`` for a stored null, the value's own
    /// bytes otherwise, with one `0xFF` appended to a value that is ``nullBytes`` followed by zero or
    /// more `0xFF` bytes (the escape that keeps such a value from reading back as a null).
    public var untaggedBytes: [UInt8] {
        if kind == .null { return StoredValue.nullBytes }
        return StoredValue.isNullOrEscaped(bytes) ? bytes + [0xFF] : bytes
    }

    /// A value read from a backend without type tags: ``nullBytes`` is a stored null, an escaped value
    /// (see ``untaggedBytes``) loses its escape, and anything else (including what other clients
    /// wrote) is returned as it is, untagged.
    public init(untagged bytes: [UInt8]) {
        guard StoredValue.isNullOrEscaped(bytes) else {
            self.init(bytes: bytes, kind: .untagged)
            return
        }
        if bytes.count == StoredValue.nullBytes.count {
            self = .null
        } else {
            self.init(bytes: Array(bytes.dropLast()), kind: .untagged)
        }
    }

    /// True for ``nullBytes`` followed by zero or more `0xFF` bytes.
    private static func isNullOrEscaped(_ bytes: [UInt8]) -> Bool {
        guard bytes.count >= nullBytes.count, bytes.first == 0xC1 else { return false }
        return bytes.starts(with: nullBytes) && bytes.dropFirst(nullBytes.count).allSatisfy { $0 == 0xFF }
    }
}

/// Whether a set overwrites.
@_spi(Backend) public enum SetMode: Sendable, Hashable {
    /// Store unconditionally.
    case set
    /// Store only if the key does not exist (or has expired); report whether it stored.
    case add
}

/// How a backend treats keys that memcached could not store (over 250 bytes, control characters, spaces).
@_spi(Backend) public enum KeyStrictness: Sendable, Hashable {
    /// Reject with ``CacheError/invalidKey(key:reason:)`` before any I/O (memcached).
    case strict
    /// Accept, and log a warning once per key (other backends), as Django does.
    case lenient
}

/// The backend SPI: bytes in, bytes out, one blocking and one async entry per operation.
///
/// The cache front (``Cache`` and ``AsyncCache``) has already made and validated the keys, encoded the
/// values and applied the timeout rules (`.default` resolved, expire-now handled), so backends stay thin:
/// they receive final keys and an expiry that is always in the future or `.never`.
///
/// Blocking entries run on the caller's thread; async entries must never block a thread. Backends that
/// never wait (in-memory ones) adopt ``NonBlockingCacheBackend`` and get the async entries for free.
@_spi(Backend) public protocol CacheBackend: AnyObject, Sendable {
    /// Whether invalid keys are rejected or only warned about.
    var keyStrictness: KeyStrictness { get }
    /// True when the blocking entries can wait on I/O: the front then applies the async-safety guard.
    var waitsOnIO: Bool { get }
    /// A short description for logs and errors (never containing passwords).
    var backendDescription: String { get }
    /// True when a value's ``ValueKind`` comes back as it was stored (memcached keeps it in the item
    /// flags, in-process backends keep the ``StoredValue``); false when reads report `untagged`
    /// (Redis). The `"django"` serializer writes pymemcache's flags where they are kept.
    var keepsValueKinds: Bool { get }
    /// The server kind, as OpenTelemetry's `db.system.name` spells it (`redis`, `memcached`), for a
    /// backend that is a server: its operations' durations are reported as
    /// `db.client.operation.duration`. Nil (the default) for in-process backends.
    var databaseSystem: String? { get }
    /// True when reads may be answered from a near cache in this process (a traced `get` then says
    /// whether it was, through ``StoredValue/servedFromNearCache``). False by default.
    var keepsNearCache: Bool { get }

    /// Returns the value of `key`, or nil when it is missing or expired.
    func get(_ key: String) throws -> StoredValue?
    /// Returns the values of the keys that exist.
    func getMany(_ keys: [String]) throws -> [String: StoredValue]
    /// Stores `value`; with `.add` only if the key does not exist. Returns whether it stored.
    func set(_ key: String, _ value: StoredValue, expiry: CacheExpiry, mode: SetMode) throws -> Bool
    /// Stores every item; returns the keys that could not be stored.
    func setMany(_ items: [(key: String, value: StoredValue)], expiry: CacheExpiry) throws -> [String]
    /// Deletes `key`; returns whether it existed.
    func delete(_ key: String) throws -> Bool
    /// Deletes every key.
    func deleteMany(_ keys: [String]) throws
    /// Adds `delta` atomically and returns the new value. Missing key: ``CacheError/missingKey(_:)``;
    /// non-integer value: ``CacheError/notAnInteger(key:)``. The expiry is kept.
    func incr(_ key: String, by delta: Int64) throws -> Int64
    /// Sets a new expiry on an existing key; returns whether it existed.
    func touch(_ key: String, expiry: CacheExpiry) throws -> Bool
    /// Returns whether `key` exists and has not expired.
    func hasKey(_ key: String) throws -> Bool
    /// Removes everything this backend stores (see each backend for the scope).
    func clear() throws
    /// Releases connections; the backend may be used again afterwards (it reconnects).
    func close()
    /// Releases connections and ends the backend's own threads for good: the cache front calls it once
    /// the cache has shut down and no call of its is in flight (or the grace period has passed).
    /// Defaults to ``close()``.
    func shutdown() async

    /// Async ``get(_:)``.
    func asyncGet(_ key: String) async throws -> StoredValue?
    /// Async ``getMany(_:)``.
    func asyncGetMany(_ keys: [String]) async throws -> [String: StoredValue]
    /// Async ``set(_:_:expiry:mode:)``.
    func asyncSet(_ key: String, _ value: StoredValue, expiry: CacheExpiry, mode: SetMode) async throws -> Bool
    /// Async ``setMany(_:expiry:)``.
    func asyncSetMany(_ items: [(key: String, value: StoredValue)], expiry: CacheExpiry) async throws -> [String]
    /// Async ``delete(_:)``.
    func asyncDelete(_ key: String) async throws -> Bool
    /// Async ``deleteMany(_:)``.
    func asyncDeleteMany(_ keys: [String]) async throws
    /// Async ``incr(_:by:)``.
    func asyncIncr(_ key: String, by delta: Int64) async throws -> Int64
    /// Async ``touch(_:expiry:)``.
    func asyncTouch(_ key: String, expiry: CacheExpiry) async throws -> Bool
    /// Async ``hasKey(_:)``.
    func asyncHasKey(_ key: String) async throws -> Bool
    /// Async ``clear()``.
    func asyncClear() async throws

    /// Deletes `key` only while it holds `expected`'s bytes, in one step on the server (a script, a
    /// compare-and-swap, a compare under the store's lock); whether it deleted it. What a stampede
    /// lock's holder uses to release its own lock and never the next holder's.
    func deleteIfEqual(_ key: String, _ expected: StoredValue) throws -> Bool
    /// ``deleteIfEqual(_:_:)`` without blocking a thread.
    func asyncDeleteIfEqual(_ key: String, _ expected: StoredValue) async throws -> Bool

    /// The server a call on the made key `key` goes to, named for the front's circuit breakers (one per
    /// server, so that one dead server of several opens only its own). nil (the default): the backend
    /// has one breaker for all its calls.
    func breakerScope(forKey key: String) -> String?
}

@_spi(Backend) extension CacheBackend {
    /// One breaker for the whole backend.
    public func breakerScope(forKey key: String) -> String? { nil }

    /// A get, a compare and a delete: not one step, so another client's write between the get and the
    /// delete is lost. Every built-in backend replaces it with an atomic one; a backend of your own
    /// should too.
    public func deleteIfEqual(_ key: String, _ expected: StoredValue) throws -> Bool {
        guard try get(key)?.bytes == expected.bytes else { return false }
        return try delete(key)
    }

    /// ``deleteIfEqual(_:_:)``'s fallback on the async face (the same caveat).
    public func asyncDeleteIfEqual(_ key: String, _ expected: StoredValue) async throws -> Bool {
        guard try await asyncGet(key)?.bytes == expected.bytes else { return false }
        return try await asyncDelete(key)
    }
}

/// A backend whose operations never wait (in-process memory): its async entries simply call the
/// blocking ones, and the async-safety guard does not apply.
@_spi(Backend) public protocol NonBlockingCacheBackend: CacheBackend {}

@_spi(Backend) extension CacheBackend {
    /// False: reads report `untagged` (override where kinds are kept).
    public var keepsValueKinds: Bool { false }

    /// Nil: not a server.
    public var databaseSystem: String? { nil }

    /// False: no near cache.
    public var keepsNearCache: Bool { false }

    /// ``close()``: enough for a backend without threads of its own.
    public func shutdown() async { close() }
}

@_spi(Backend) extension NonBlockingCacheBackend {
    /// False: in-process memory never waits.
    public var waitsOnIO: Bool { false }
    /// True: in-process memory keeps the whole ``StoredValue``.
    public var keepsValueKinds: Bool { true }
    /// Calls ``get(_:)``: it never waits.
    public func asyncGet(_ key: String) async throws -> StoredValue? { try get(key) }
    /// Calls ``getMany(_:)``.
    public func asyncGetMany(_ keys: [String]) async throws -> [String: StoredValue] { try getMany(keys) }
    /// Calls ``set(_:_:expiry:mode:)``.
    public func asyncSet(_ key: String, _ value: StoredValue, expiry: CacheExpiry, mode: SetMode) async throws -> Bool {
        try set(key, value, expiry: expiry, mode: mode)
    }
    /// Calls ``setMany(_:expiry:)``.
    public func asyncSetMany(_ items: [(key: String, value: StoredValue)], expiry: CacheExpiry) async throws -> [String] {
        try setMany(items, expiry: expiry)
    }
    /// Calls ``delete(_:)``.
    public func asyncDelete(_ key: String) async throws -> Bool { try delete(key) }
    /// Calls ``deleteMany(_:)``.
    public func asyncDeleteMany(_ keys: [String]) async throws { try deleteMany(keys) }
    /// Calls ``incr(_:by:)``.
    public func asyncIncr(_ key: String, by delta: Int64) async throws -> Int64 { try incr(key, by: delta) }
    /// Calls ``touch(_:expiry:)``.
    public func asyncTouch(_ key: String, expiry: CacheExpiry) async throws -> Bool { try touch(key, expiry: expiry) }
    /// Calls ``hasKey(_:)``.
    public func asyncHasKey(_ key: String) async throws -> Bool { try hasKey(key) }
    /// Calls ``clear()``.
    public func asyncClear() async throws { try clear() }
    /// The blocking call, which does not wait.
    public func asyncDeleteIfEqual(_ key: String, _ expected: StoredValue) async throws -> Bool { try deleteIfEqual(key, expected) }
}

/// Parses an integer stored as decimal ASCII text (optional sign), as `incr` needs it. Nil if the bytes
/// are not a canonical integer in range.
package func parseStoredInteger(_ bytes: [UInt8]) -> Int64? {
    guard !bytes.isEmpty, bytes.count <= 20 else { return nil }
    var i = 0
    var negative = false
    if bytes[0] == UInt8(ascii: "-") || bytes[0] == UInt8(ascii: "+") {
        negative = bytes[0] == UInt8(ascii: "-")
        i = 1
        guard bytes.count > 1 else { return nil }
    }
    var value: Int64 = 0
    while i < bytes.count {
        let d = bytes[i] &- UInt8(ascii: "0")
        guard d <= 9 else { return nil }
        let (m, o1) = value.multipliedReportingOverflow(by: 10)
        let (s, o2) = negative ? m.subtractingReportingOverflow(Int64(d)) : m.addingReportingOverflow(Int64(d))
        guard !o1, !o2 else { return nil }
        value = s
        i += 1
    }
    return value
}

/// The decimal text of an integer, as stored so that `incr` and other clients can read it.
@inlinable
package func storedIntegerBytes(_ value: Int64) -> [UInt8] { Array(String(value).utf8) }
