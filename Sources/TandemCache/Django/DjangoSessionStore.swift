import Foundation

/// A Django session: its key (the value of Django's `sessionid` cookie) and its data.
public struct DjangoSession: Sendable, Hashable {
    /// The session key.
    public let key: String
    /// The session's data (a Python dict with `str` keys).
    public var data: [String: PythonValue]

    /// A session with `key` and `data`.
    public init(key: String, data: [String: PythonValue] = [:]) {
        self.key = key
        self.data = data
    }

    /// The logged-in user's primary key as Django keeps it (`_auth_user_id`, a `str`); nil when nobody
    /// is logged in.
    public var userID: String? { data["_auth_user_id"]?.string }

    /// The authentication backend that logged the user in (`_auth_user_backend`).
    public var authBackend: String? { data["_auth_user_backend"]?.string }
}

/// Django's cache-backed sessions (`django.contrib.sessions.backends.cache`, and the cache half of
/// `cached_db`), read and written through a Tandem cache shared with the Django app.
///
/// The cache must be the one the app's `SESSION_CACHE_ALIAS` names, with the same `KEY_PREFIX` and
/// `VERSION`, and `"SERIALIZER": "django"` (plus its `COMPRESSOR` with django-redis):
///
/// ```swift
/// let sessions = DjangoSessionStore(cache: caches.default)
/// if let session = try await sessions.load(sessionKey: cookieValue), let user = session.userID { ... }
/// ```
///
/// A session Tandem saves is loaded by Django's `SessionStore` (and the other way round). Both faces:
/// the `async` methods use the cache's async face, the others its blocking face.
public struct DjangoSessionStore: Sendable {
    /// Which of Django's session engines the app uses.
    public enum Engine: Sendable, Hashable {
        /// `django.contrib.sessions.backends.cache`.
        case cache
        /// `django.contrib.sessions.backends.cached_db` (only its cache half: a session Tandem saves is
        /// not written to the database).
        case cachedDB

        /// The prefix Django puts before a session key to make its cache key.
        public var keyPrefix: String {
            switch self {
            case .cache: "django.contrib.sessions.cache"
            case .cachedDB: "django.contrib.sessions.cached_db"
            }
        }
    }

    /// Django's default session lifetime (`SESSION_COOKIE_AGE`, two weeks).
    public static let defaultExpiry = CacheTimeout.seconds(1_209_600)

    /// The cache the sessions are in.
    public let cache: Cache
    /// The app's session engine.
    public let engine: Engine

    /// Sessions in `cache`, as `engine` keeps them.
    public init(cache: Cache, engine: Engine = .cache) {
        self.cache = cache
        self.engine = engine
    }

    /// True for a key Django could have made: 8 to 128 characters, lowercase letters and digits (Django
    /// makes 32). Anything else is never looked up, so a cookie cannot name another cache key.
    public static func isValidKey(_ key: String) -> Bool {
        (8...128).contains(key.utf8.count) && key.utf8.allSatisfy { (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) }
    }

    /// A new random session key, as Django makes them (32 lowercase letters and digits).
    public static func newKey() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        var rng = SystemRandomNumberGenerator()
        return String((0..<32).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &rng)] })
    }

    private func cacheKey(_ sessionKey: String) -> String { engine.keyPrefix + sessionKey }

    private static func session(_ key: String, _ value: PythonValue?) throws -> DjangoSession? {
        guard let value else { return nil }
        guard case .dict(let items) = value else {
            throw CacheError.decodingFailed(key: key, type: "DjangoSession", reason: "the session is a Python \(value.typeName), not a dict")
        }
        var data: [String: PythonValue] = [:]
        for item in items {
            guard case .string(let name) = item.key else {
                throw CacheError.decodingFailed(key: key, type: "DjangoSession", reason: "the session has a key that is not a str")
            }
            data[name] = item.value
        }
        return DjangoSession(key: key, data: data)
    }

    private static func python(_ data: [String: PythonValue]) -> PythonValue {
        .dict(data.sorted { $0.key < $1.key }.map { PythonDictItem(.string($0.key), $0.value) })
    }

    // MARK: async face

    /// The session of `sessionKey` (the `sessionid` cookie's value); nil when there is none, or the key
    /// is not one Django makes (see ``isValidKey(_:)``).
    public func load(sessionKey: String) async throws -> DjangoSession? {
        guard Self.isValidKey(sessionKey) else { return nil }
        return try Self.session(sessionKey, try await cache.async.get(cacheKey(sessionKey)) as PythonValue?)
    }

    /// Stores `session` for `expiry` (Django's `SESSION_COOKIE_AGE` by default).
    public func save(_ session: DjangoSession, expiry: CacheTimeout = DjangoSessionStore.defaultExpiry) async throws {
        try Self.check(session.key)
        try await cache.async.set(cacheKey(session.key), Self.python(session.data), timeout: expiry)
    }

    /// A new session holding `data`, under a fresh key that no session has (stored with `add`, as
    /// Django's `create()` does).
    public func create(_ data: [String: PythonValue] = [:], expiry: CacheTimeout = DjangoSessionStore.defaultExpiry) async throws -> DjangoSession {
        for _ in 0..<Self.createAttempts {
            let session = DjangoSession(key: Self.newKey(), data: data)
            if try await cache.async.add(cacheKey(session.key), Self.python(data), timeout: expiry) { return session }
        }
        throw keysTaken
    }

    /// Deletes the session of `sessionKey` (Django's logout). Returns whether there was one. A logout
    /// must take effect: with `IGNORE_EXCEPTIONS` on, a server failure is still thrown, not swallowed.
    @discardableResult
    public func delete(sessionKey: String) async throws -> Bool {
        guard Self.isValidKey(sessionKey) else { return false }
        return try await cache.async.delete(cacheKey(sessionKey), failOpen: false)
    }

    // MARK: blocking face

    // Each takes the caller's `file` and `line`, as the cache's blocking methods do, so that the guard's
    // refusal or warning names the caller's line, not this file's.

    /// The blocking face's ``load(sessionKey:)``.
    public func load(sessionKey: String, file: String = #fileID, line: Int = #line) throws -> DjangoSession? {
        guard Self.isValidKey(sessionKey) else { return nil }
        let value: PythonValue? = try cache.get(cacheKey(sessionKey), file: file, line: line)
        return try Self.session(sessionKey, value)
    }

    /// The blocking face's ``save(_:expiry:)``.
    public func save(_ session: DjangoSession, expiry: CacheTimeout = DjangoSessionStore.defaultExpiry,
                     file: String = #fileID, line: Int = #line) throws {
        try Self.check(session.key)
        try cache.set(cacheKey(session.key), Self.python(session.data), timeout: expiry, file: file, line: line)
    }

    /// The blocking face's ``create(_:expiry:)``.
    public func create(_ data: [String: PythonValue] = [:], expiry: CacheTimeout = DjangoSessionStore.defaultExpiry,
                       file: String = #fileID, line: Int = #line) throws -> DjangoSession {
        for _ in 0..<Self.createAttempts {
            let session = DjangoSession(key: Self.newKey(), data: data)
            if try cache.add(cacheKey(session.key), Self.python(data), timeout: expiry, file: file, line: line) { return session }
        }
        throw keysTaken
    }

    /// The blocking face's ``delete(sessionKey:)``.
    @discardableResult
    public func delete(sessionKey: String, file: String = #fileID, line: Int = #line) throws -> Bool {
        guard Self.isValidKey(sessionKey) else { return false }
        return try cache.delete(cacheKey(sessionKey), failOpen: false, file: file, line: line)
    }

    /// New keys `create` tries before it gives up (Django's `SessionStore.create` loops the same way):
    /// a random 32-character key is taken only by a broken generator, so a run of refusals means the
    /// `add` is not reaching the server.
    private static let createAttempts = 10

    /// What `create` throws when every attempt found its new key taken.
    private var keysTaken: CacheError {
        .invalidKey(key: engine.keyPrefix, reason: "\(Self.createAttempts) new session keys in a row were not stored: taken, or the cache is unavailable and fails open")
    }

    private static func check(_ key: String) throws {
        guard isValidKey(key) else {
            throw CacheError.invalidKey(key: key, reason: "a Django session key is 8 to 128 lowercase letters and digits")
        }
    }
}
