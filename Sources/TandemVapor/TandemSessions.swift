#if VaporAdapter
import Foundation
import Tandem
import TandemNIO
import Vapor

/// Vapor's sessions on a Tandem cache, like Django's cache-backed sessions
/// (`django.contrib.sessions.backends.cache`): each session is one key,
/// `<keyPrefix><session id>`, kept from its last write for as long as its cookie lives (the
/// `maxAge`, else the `expires`, of the cookie Vapor's `sessions.configuration.cookieFactory` makes:
/// seven days by default; a cookie with neither lives two weeks, Django's `SESSION_COOKIE_AGE`), or
/// for `timeout` when one is given. A new session's id is 32 random bytes (as Vapor's memory driver makes them) and is
/// claimed with `add`, so two sessions can never share one.
///
/// `app.sessions.use(.tandem(caches["sessions"]))` and `app.middleware.use(app.sessions.middleware)`.
public struct TandemSessions: AsyncSessionDriver {
    /// The cache that holds the sessions.
    public let cache: Tandem.Cache
    /// How long a session lives after its last write (nil: as long as its cookie).
    public let timeout: Duration?
    /// Put in front of every session id (Django's is `django.contrib.sessions.cache`).
    public let keyPrefix: String

    /// Sessions in `cache`, kept for `timeout`, or as long as their cookies live when it is nil.
    public init(cache: Tandem.Cache, timeout: Duration? = nil, keyPrefix: String = "django.contrib.sessions.cache") {
        self.cache = cache
        self.timeout = timeout
        self.keyPrefix = keyPrefix
        NIOLoopGuard.install()
    }

    /// How long the session `id` is kept: `timeout`, else its cookie's lifetime.
    func lifetime(of id: SessionID, for request: Request) -> CacheTimeout {
        if let timeout { return .seconds(Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18) }
        let cookie = request.application.sessions.configuration.cookieFactory(id)
        if let maxAge = cookie.maxAge { return .seconds(Double(maxAge)) }
        if let expires = cookie.expires { return .seconds(expires.timeIntervalSinceNow) }
        return .seconds(1_209_600)
    }

    public func createSession(_ data: SessionData, for request: Request) async throws -> SessionID {
        let bytes = Array(try JSONEncoder().encode(data))
        for _ in 0..<8 {
            let id = SessionID(string: Data([UInt8].random(count: 32)).base64EncodedString())
            if try await cache.async.add(keyPrefix + id.string, bytes, timeout: lifetime(of: id, for: request)) { return id }
        }
        throw Abort(.internalServerError, reason: "could not claim a new session id")
    }

    public func readSession(_ sessionID: SessionID, for request: Request) async throws -> SessionData? {
        guard let bytes = try await cache.async.get(keyPrefix + sessionID.string) as [UInt8]? else { return nil }
        return try? JSONDecoder().decode(SessionData.self, from: Data(bytes))
    }

    public func updateSession(_ sessionID: SessionID, to data: SessionData, for request: Request) async throws -> SessionID {
        try await cache.async.set(keyPrefix + sessionID.string, Array(try JSONEncoder().encode(data)),
                                  timeout: lifetime(of: sessionID, for: request))
        return sessionID
    }

    public func deleteSession(_ sessionID: SessionID, for request: Request) async throws {
        try await cache.async.delete(keyPrefix + sessionID.string, failOpen: false)
    }
}

extension Application.Sessions.Provider {
    /// Vapor's sessions on a Tandem cache: `app.sessions.use(.tandem(caches["sessions"]))`, kept as
    /// long as their cookies live unless `timeout` says otherwise.
    public static func tandem(_ cache: Tandem.Cache, timeout: Duration? = nil,
                              keyPrefix: String = "django.contrib.sessions.cache") -> Self {
        .init { app in
            let driver = TandemSessions(cache: cache, timeout: timeout, keyPrefix: keyPrefix)
            app.sessions.use { _ in driver }
        }
    }
}
#endif
