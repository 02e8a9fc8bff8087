#if VaporAdapter
import Foundation
import Synchronization
import Tandem
import TandemTestSupport
import TandemVapor
import Testing
import Vapor
import VaporTesting

private struct Profile: Codable, Equatable { var name: String; var visits: Int }

@Suite struct VaporCacheContract {
    @Test(arguments: AdapterBackends.all)
    func getSetNilDeletesAndExpiry(_ backend: String) async throws {
        let tandem = try AdapterBackends.cache(backend, redisDB: 7)
        try await withApp { app in
            app.caches.use(.tandem(tandem))
            let cache = app.cache
            #expect(cache is TandemVaporCache)
            #expect(try await cache.get("p", as: Profile.self) == nil)
            try await cache.set("p", to: Profile(name: "ada", visits: 1))
            #expect(try await cache.get("p", as: Profile.self) == Profile(name: "ada", visits: 1))
            // Stored in the Tandem cache itself, as JSON.
            let raw = try #require(try await tandem.async.get("p") as [UInt8]?)
            #expect(String(decoding: raw, as: UTF8.self).contains("\"ada\""))
            try await cache.set("p", to: Profile?.none)
            #expect(try await cache.get("p", as: Profile.self) == nil, "nil deletes")
            try await cache.delete("never-there")
            let alive = AliveWindow(0.8)   // a late step on a loaded machine proves nothing about "still there"
            try await cache.set("short", to: "v", expiresIn: .seconds(1))
            let early = try await cache.get("short", as: String.self)
            if alive.isOpen { #expect(early == "v") }
            try await cache.set("long", to: "v", expiresIn: .minutes(5))
            try await Task.sleep(for: .milliseconds(2100))
            #expect(try await cache.get("short", as: String.self) == nil, "the expiry is honoured")
            #expect(try await cache.get("long", as: String.self) == "v")
            // A value that does not decode as the type asked for is an error, not a wrong value.
            await #expect(throws: DecodingError.self) { _ = try await cache.get("long", as: Int.self) }
        }
    }

    @Test func requestCachesCompleteOnTheRequestsLoop() async throws {
        let tandem = try AdapterBackends.cache("locmem", redisDB: 7)
        try await withApp { app in
            app.caches.use(.tandem(tandem))
            app.get("c") { req async throws -> String in
                try await req.cache.set("k", to: "v")
                return try await req.cache.get("k", as: String.self) ?? "none"
            }
            try await app.testing().test(.GET, "c") { res async in
                #expect(res.status == .ok && res.body.string == "v")
            }
        }
    }
}

@Suite struct VaporSessions {
    @Test(arguments: AdapterBackends.all)
    func aSessionSurvivesAcrossRequestsInTheCache(_ backend: String) async throws {
        let tandem = try AdapterBackends.cache(backend, redisDB: 7)
        try await withApp { app in
            app.sessions.use(.tandem(tandem, timeout: .seconds(300)))
            app.middleware.use(app.sessions.middleware)
            app.post("login") { req -> HTTPStatus in
                req.session.data["user"] = "ada"
                return .ok
            }
            app.get("me") { req -> String in req.session.data["user"] ?? "nobody" }
            app.post("logout") { req -> HTTPStatus in
                req.session.destroy()
                return .ok
            }
            let tester = try app.testing()
            var cookie = ""
            try await tester.test(.POST, "login") { res async in
                cookie = res.headers.first(name: .setCookie)?.split(separator: ";").first.map(String.init) ?? ""
            }
            #expect(cookie.hasPrefix("vapor-session="), "\(cookie)")
            try await tester.test(.GET, "me", headers: ["Cookie": cookie]) { res async in #expect(res.body.string == "ada") }
            try await tester.test(.GET, "me") { res async in #expect(res.body.string == "nobody") }
            let id = String(cookie.dropFirst("vapor-session=".count))
            #expect(try await tandem.async.get("django.contrib.sessions.cache" + id) as [UInt8]? != nil, "stored like Django's cache sessions")
            try await tester.test(.POST, "logout", headers: ["Cookie": cookie]) { res async in #expect(res.status == .ok) }
            #expect(try await tandem.async.get("django.contrib.sessions.cache" + id) as [UInt8]? == nil, "destroyed")
        }
    }
}

@Suite struct VaporMiddlewares {
    @Test(arguments: AdapterBackends.all)
    func responseCacheFollowsDjangosRules(_ backend: String) async throws {
        let tandem = try AdapterBackends.cache(backend, redisDB: 7)
        let counts = Mutex<[String: Int]>([:])
        @Sendable func count(_ name: String) -> String {
            String(counts.locked { $0[name, default: 0] += 1; return $0[name] ?? 0 })
        }
        try await withApp { app in
            app.middleware.use(TandemResponseCacheMiddleware(cache: tandem, timeout: .seconds(60)))
            app.get("page") { _ in count("page") }
            app.post("page") { _ in count("post") }
            app.get("private") { _ -> Response in
                Response(status: .ok, headers: ["Cache-Control": "private"], body: .init(string: count("private")))
            }
            app.get("vary") { req -> Response in
                Response(status: .ok, headers: ["Vary": "Accept-Language"],
                         body: .init(string: (req.headers.first(name: .acceptLanguage) ?? "-") + count("vary")))
            }
            let tester = try app.testing()
            try await tester.test(.GET, "page") { res async in
                #expect(res.body.string == "1" && res.headers.first(name: .cacheControl) == "max-age=60")
            }
            try await tester.test(.GET, "page") { res async in
                #expect(res.body.string == "1" && res.headers.first(name: .age) != nil, "served from the cache")
            }
            try await tester.test(.POST, "page") { res async in #expect(res.body.string == "1") }
            try await tester.test(.POST, "page") { res async in #expect(res.body.string == "2", "POST is never cached") }
            try await tester.test(.GET, "private") { res async in #expect(res.body.string == "1") }
            try await tester.test(.GET, "private") { res async in #expect(res.body.string == "2", "private is not stored") }
            try await tester.test(.GET, "vary", headers: ["Accept-Language": "en"]) { res async in #expect(res.body.string == "en1") }
            try await tester.test(.GET, "vary", headers: ["Accept-Language": "fr"]) { res async in #expect(res.body.string == "fr2") }
            try await tester.test(.GET, "vary", headers: ["Accept-Language": "en"]) { res async in #expect(res.body.string == "en1") }
        }
    }

    @Test func tandemErrorsBecomeStatusesThatSayWhatFailed() async throws {
        let dead = try Caches(settings: ["default": CacheSettings(backend: "redis", location: ["redis://127.0.0.1:1/0"],
                                                                  options: ["CONNECT_TIMEOUT": 0.2])]).default
        try await withApp { app in
            app.middleware.use(TandemErrorMiddleware())
            app.get("cache") { _ async throws -> String in try await dead.async.get("k") ?? "none" }
            app.get("upstream") { _ async throws -> String in throw UpstreamError.deadlineExceeded(url: "http://users/1") }
            app.get("other") { _ async throws -> String in throw Abort(.conflict) }
            let tester = try app.testing()
            try await tester.test(.GET, "cache") { res async in #expect(res.status == .serviceUnavailable) }
            try await tester.test(.GET, "upstream") { res async in #expect(res.status == .gatewayTimeout) }
            try await tester.test(.GET, "other") { res async in #expect(res.status == .conflict) }
        }
    }
}

/// What a new Vapor user stumbled on (issue 30).
@Suite struct VaporEdges {
    /// A dead session store answers 503 with no server address in the body, whether the error
    /// middleware runs inside or outside the session middleware.
    @Test(arguments: [true, false])
    func aDeadSessionStoreIsA503WithoutAddressesInEitherOrder(_ errorMiddlewareFirst: Bool) async throws {
        let dead = try Caches(settings: ["default": CacheSettings(backend: "memcached", location: ["127.0.0.1:1"],
                                                                  options: ["CONNECT_TIMEOUT": 0.2])]).default
        try await withApp { app in
            app.sessions.use(.tandem(dead))
            if errorMiddlewareFirst {
                app.middleware.use(TandemErrorMiddleware())
                app.middleware.use(app.sessions.middleware)
            } else {
                app.middleware.use(app.sessions.middleware)
                app.middleware.use(TandemErrorMiddleware())
            }
            app.post("login") { req -> HTTPStatus in
                req.session.data["user"] = "ada"
                return .ok
            }
            try await app.testing().test(.POST, "login") { res async in
                #expect(res.status == .serviceUnavailable, "\(res.status)")
                #expect(!res.body.string.contains("127.0.0.1") && !res.body.string.contains("connection"), "\(res.body.string)")
            }
        }
    }

    /// A HEAD answered from the page cache carries the headers the GET would, Content-Length included.
    @Test func aCachedHeadCarriesTheGetsContentLength() async throws {
        let tandem = try AdapterBackends.cache("locmem", redisDB: 7)
        try await withApp { app in
            app.middleware.use(TandemResponseCacheMiddleware(cache: tandem, timeout: .seconds(60)))
            app.get("page") { _ in "forty bytes of body, give or take a few!" }
            let tester = try app.testing(method: .running(hostname: "127.0.0.1", port: 0))
            var lengths: [String] = []
            for _ in 0..<2 {
                try await tester.test(.HEAD, "page") { res async in
                    lengths.append(res.headers.first(name: .contentLength) ?? "none")
                    #expect(res.body.readableBytes == 0)
                }
            }
            #expect(lengths == ["40", "40"], "uncached, then cached: \(lengths)")
        }
    }

    /// Sessions live as long as their cookies: here a cookie of 1 s, so the stored session is gone
    /// after 2.5 s (with the old two-week default it stayed).
    @Test func sessionsAreKeptForTheirCookiesLifetime() async throws {
        let tandem = try AdapterBackends.cache("locmem", redisDB: 7)
        try await withApp { app in
            app.sessions.use(.tandem(tandem))
            app.sessions.configuration.cookieFactory = { id in HTTPCookies.Value(string: id.string, maxAge: 1) }
            app.middleware.use(app.sessions.middleware)
            app.post("login") { req -> HTTPStatus in
                req.session.data["user"] = "ada"
                return .ok
            }
            var cookie = ""
            try await app.testing().test(.POST, "login") { res async in
                cookie = res.headers.first(name: .setCookie)?.split(separator: ";").first.map(String.init) ?? ""
            }
            let key = "django.contrib.sessions.cache" + String(cookie.dropFirst("vapor-session=".count))
            #expect(try await tandem.async.hasKey(key), "stored")
            try await Task.sleep(for: .milliseconds(2500))
            #expect(try await tandem.async.hasKey(key) == false, "kept as long as the cookie (1 s), not two weeks")
        }
    }
}

/// Tandem's lifecycle in a Vapor application (issue 30): `app.tandem` shuts the caches and the client
/// down after Vapor has drained its requests, and never stops the loops another application uses.
@Suite struct VaporLifecycle {
    /// What `serve` does on SIGTERM: the server stops, then `app.asyncShutdown()`. A request in flight
    /// then completes with 200, using the cache after the shutdown began; the caches and the client
    /// refuse calls once it is over.
    @Test(.timeLimit(.minutes(1)))
    func aRequestInFlightAtShutdownCompletes() async throws {
        let caches = try Caches(settings: ["default": CacheSettings(backend: "locmem", location: ["inflight-\(UUID())"])])
        let client = UpstreamClient()
        let app = try await Application.make(.testing)
        app.tandem.caches = caches
        app.tandem.upstreamClient = client
        let entered = Box(Mutex(false))
        app.get("slow") { _ async throws -> String in
            entered.value.locked { $0 = true }
            try await Task.sleep(for: .milliseconds(800))
            try await caches.default.async.set("k", "finished")
            return try await caches.default.async.get("k") ?? "none"
        }
        let server = app.http.server.shared
        try await server.start(address: .hostname("127.0.0.1", port: 0))
        defer { Task { await server.shutdown() } }  // already stopped by app.tandem; stops it if that failed
        let port = try #require(server.localAddress?.port)
        let caller = UpstreamClient()
        defer { Task { await caller.shutdown() } }
        let response = Task { try await caller.async.get("http://127.0.0.1:\(port)/slow") }
        #expect(try await eventuallyAsync(30) { entered.value.locked { $0 } }, "the request reached its handler")
        try await app.asyncShutdown()
        let r = try await response.value
        #expect(r.status == 200 && r.text == "finished", "\(r.status) \(r.text ?? "")")
        await #expect(throws: CacheError.shutDown("cache 'default'")) { try await caches.default.async.get("k") as String? }
        await #expect(throws: UpstreamError.clientShutDown) { try await client.async.get("http://127.0.0.1:\(port)/slow") }
    }

    /// Two applications made, used and shut down one after the other in one process, with Redis and
    /// memcached: the second works (before, stopping the first stopped the process-wide loops).
    @Test(.timeLimit(.minutes(1)))
    func twoApplicationsOneAfterTheOther() async throws {
        for round in 0..<2 {
            let redis = try AdapterBackends.cache("redis", redisDB: 7)
            let memcached = try AdapterBackends.cache("memcached", redisDB: 7)
            try await withApp { app in
                app.tandem.caches = try Caches(settings: ["default": CacheSettings(backend: "locmem", location: ["two-\(UUID())"])])
                app.caches.use(.tandem(redis))
                app.sessions.use(.tandem(memcached))
                app.middleware.use(app.sessions.middleware)
                app.get("round") { req async throws -> String in
                    req.session.data["round"] = "\(round)"
                    try await req.cache.set("round", to: round)
                    return "\(try await req.cache.get("round", as: Int.self) ?? -1)"
                }
                try await app.testing().test(.GET, "round") { res async in
                    #expect(res.status == .ok && res.body.string == "\(round)", "round \(round): \(res.status) \(res.body.string)")
                }
            }
            _ = await redis.shutdown(gracePeriod: .zero)
            _ = await memcached.shutdown(gracePeriod: .zero)
        }
    }
}

@Suite struct VaporGuard {
    /// A synchronous route runs on a NIO event-loop thread: a blocking Tandem call there is refused
    /// (and says to use `.async` and names the route's line), whatever the backend and the policy.
    @Test func aBlockingCallInASynchronousRouteIsRefused() async throws {
        let tandem = try Caches(settings: ["default": CacheSettings(backend: "locmem", location: ["guard-\(UUID())"],
                                                                    options: ["ASYNC_UNSAFE": "allow"])]).default
        try await withApp { app in
            app.caches.use(.tandem(tandem))   // setting up the adapter installs the guard on NIO's threads
            let setLine = #line + 2  // the line of `tandem.set` below
            app.get("sync") { _ -> String in
                do { try tandem.set("k", 1); return "stored" } catch { return "\(error)" }
            }
            app.get("async") { _ async throws -> String in
                try await tandem.async.set("k", 2)
                return "stored"
            }
            let tester = try app.testing(method: .running(hostname: "127.0.0.1", port: 0))
            try await tester.test(.GET, "sync") { res async in
                #expect(res.body.string.contains("on an event-loop thread") && res.body.string.contains(".async"), "\(res.body.string)")
                #expect(res.body.string.contains("at \(#fileID):\(setLine) "), "the refusal names the route's line: \(res.body.string)")
            }
            try await tester.test(.GET, "async") { res async in #expect(res.body.string == "stored") }
        }
    }
}
#endif
