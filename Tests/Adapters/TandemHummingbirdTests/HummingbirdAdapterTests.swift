#if HummingbirdAdapter
import Foundation
import Hummingbird
import HummingbirdAuth
import HummingbirdTesting
import Logging
import NIOPosix
import ServiceLifecycle
import Synchronization
import Tandem
import TandemHummingbird
import TandemNIO
import TandemTestSupport
import Testing

struct Token: Codable, Sendable, Equatable { var user: String; var n: Int }

@Suite struct PersistDriverContract {
    @Test(arguments: AdapterBackends.all)
    func createSetGetRemoveAndTheirErrors(_ backend: String) async throws {
        let persist = TandemPersistDriver(cache: try AdapterBackends.cache(backend, redisDB: 6))
        try await persist.create(key: "a", value: Token(user: "ada", n: 1), expires: nil)
        await #expect(throws: PersistError.duplicate) { try await persist.create(key: "a", value: Token(user: "bob", n: 2), expires: nil) }
        #expect(try await persist.get(key: "a", as: Token.self) == Token(user: "ada", n: 1), "create never overwrites")
        await #expect(throws: PersistError.invalidConversion) { _ = try await persist.get(key: "a", as: Int.self) }
        #expect(try await persist.get(key: "missing", as: Token.self) == nil)
        // No expiry: none reported.
        let noTTL = try #require(try await persist.getWithTTL(key: "a", as: Token.self))
        #expect(noTTL.ttl == nil)
        try await persist.set(key: "a", value: Token(user: "ada", n: 3), expires: nil)
        #expect(try await persist.get(key: "a", as: Token.self)?.n == 3)
        try await persist.remove(key: "a")
        #expect(try await persist.get(key: "a", as: Token.self) == nil)
        try await persist.create(key: "a", value: Token(user: "cy", n: 4), expires: nil)
        #expect(try await persist.get(key: "a", as: Token.self)?.user == "cy", "a removed key can be created again")
    }

    @Test(arguments: AdapterBackends.all)
    func setWithoutAnExpiryKeepsTheOneTheKeyHas(_ backend: String) async throws {
        let persist = TandemPersistDriver(cache: try AdapterBackends.cache(backend, redisDB: 6))
        try await persist.set(key: "s", value: "v1", expires: .seconds(600))
        try await persist.set(key: "s", value: "v2", expires: nil)
        let kept = try #require(try await persist.getWithTTL(key: "s", as: String.self))
        #expect(kept.object == "v2")
        let ttl = try #require(kept.ttl, "the expiry was kept")
        #expect(ttl > .seconds(500) && ttl <= .seconds(600), "\(ttl)")
        // A new expiry replaces it.
        try await persist.set(key: "s", value: "v3", expires: .seconds(30))
        let replaced = try #require(try await persist.getWithTTL(key: "s", as: String.self)?.ttl)
        #expect(replaced <= .seconds(30) && replaced > .seconds(20))
    }

    @Test(arguments: AdapterBackends.all)
    func valuesExpire(_ backend: String) async throws {
        let persist = TandemPersistDriver(cache: try AdapterBackends.cache(backend, redisDB: 6))
        try await persist.create(key: "e", value: 1, expires: .seconds(1))
        try await persist.set(key: "f", value: 2, expires: .milliseconds(1500))
        try await Task.sleep(for: .milliseconds(2100))
        #expect(try await persist.get(key: "e", as: Int.self) == nil)
        #expect(try await persist.get(key: "f", as: Int.self) == nil)
        try await persist.create(key: "e", value: 3, expires: nil)
        #expect(try await persist.get(key: "e", as: Int.self) == 3, "an expired key can be created again")
    }
}

@Suite struct HummingbirdSessions {
    typealias Context = BasicSessionRequestContext<String, String>

    @Test(arguments: AdapterBackends.all)
    func aSessionSurvivesAcrossRequestsInTheCache(_ backend: String) async throws {
        let cache = try AdapterBackends.cache(backend, redisDB: 6)
        let router = Router(context: Context.self)
        router.add(middleware: SessionMiddleware(storage: TandemPersistDriver(cache: cache)))
        router.post("/login") { _, context -> HTTPResponse.Status in
            context.sessions.createSession("ada")
            return .ok
        }
        router.get("/me") { _, context -> String in context.sessions.session ?? "nobody" }
        let app = Application(router: router)
        try await app.test(.router) { client in
            let cookie = try await client.execute(uri: "/login", method: .post) { response in
                #expect(response.status == .ok)
                return try #require(response.headers[.setCookie]?.split(separator: ";").first.map(String.init))
            }
            try await client.execute(uri: "/me", method: .get, headers: [.cookie: cookie]) { response in
                #expect(String(buffer: response.body) == "ada")
            }
            try await client.execute(uri: "/me", method: .get) { response in
                #expect(String(buffer: response.body) == "nobody", "no cookie, no session")
            }
            // The session is in the Tandem cache, under Hummingbird's key.
            let id = String(cookie.split(separator: "=", maxSplits: 1).last ?? "")
            #expect(try await cache.async.get("hbs.\(id)") as [UInt8]? != nil)
        }
    }
}

@Suite struct HummingbirdResponseCache {
    /// A router whose routes count their calls: a second answer "1" means it came from the cache.
    private func app(_ cache: Tandem.Cache) -> (some ApplicationProtocol, Counter) {
        let counter = Counter()
        let router = Router()
        router.add(middleware: TandemResponseCacheMiddleware(cache: cache, timeout: .seconds(60)))
        @Sendable func count(_ name: String) -> String { String(counter.bump(name)) }
        router.get("/page") { _, _ in count("page") }
        router.post("/page") { _, _ in count("post") }
        router.get("/private") { _, _ in
            Response(status: .ok, headers: [.cacheControl: "private"], body: .init(byteBuffer: ByteBuffer(string: count("private"))))
        }
        router.get("/no-store") { _, _ in
            Response(status: .ok, headers: [.cacheControl: "no-store"], body: .init(byteBuffer: ByteBuffer(string: count("no-store"))))
        }
        router.get("/max-age") { _, _ in
            Response(status: .ok, headers: [.cacheControl: "max-age=1"], body: .init(byteBuffer: ByteBuffer(string: count("max-age"))))
        }
        router.get("/cookie") { _, _ in
            Response(status: .ok, headers: [.setCookie: "a=b"], body: .init(byteBuffer: ByteBuffer(string: count("cookie"))))
        }
        router.get("/vary") { request, _ in
            Response(status: .ok, headers: [.vary: "Accept-Language"],
                     body: .init(byteBuffer: ByteBuffer(string: (request.headers[.acceptLanguage] ?? "-") + count("vary"))))
        }
        router.get("/missing") { _, _ -> Response in
            _ = count("missing")
            return Response(status: .notFound)
        }
        return (Application(router: router), counter)
    }

    @Test(arguments: AdapterBackends.all)
    func djangosRules(_ backend: String) async throws {
        let (app, counter) = app(try AdapterBackends.cache(backend, redisDB: 6))
        try await app.test(.router) { client in
            func get(_ uri: String, _ headers: HTTPFields = [:], method: HTTPRequest.Method = .get) async throws -> (String, HTTPFields, HTTPResponse.Status) {
                try await client.execute(uri: uri, method: method, headers: headers) { ($0.body.getString(at: 0, length: $0.body.readableBytes) ?? "", $0.headers, $0.status) }
            }
            /// The bodies of two requests in a row: ["1", "2"] when the second was not served from the cache.
            func twice(_ uri: String, method: HTTPRequest.Method = .get) async throws -> [String] {
                [try await get(uri, method: method).0, try await get(uri, method: method).0]
            }
            let first = try await get("/page")
            #expect(first.0 == "1" && first.1[.cacheControl] == "max-age=60" && first.1[.age] == nil, "\(first)")
            let second = try await get("/page")
            #expect(second.0 == "1", "served from the cache")
            #expect(second.1[.age].flatMap(Int.init) != nil && second.1[.cacheControl] == "max-age=60", "\(second.1)")
            #expect(try await get("/page?q=1").0 == "2", "the query is part of the key")
            let head = try await get("/page", method: .head)
            #expect(head.0.isEmpty && head.2 == .ok && head.1[.age] != nil, "HEAD is answered from the GET's entry")
            #expect(try await twice("/page", method: .post) == ["1", "2"], "POST is never cached")
            #expect(try await twice("/private") == ["1", "2"], "private is not stored")
            #expect(try await twice("/no-store") == ["1", "2"])
            #expect(try await twice("/cookie") == ["1", "2"], "a response that sets a cookie is not stored")
            let missing1 = try await get("/missing").2
            let missing2 = try await get("/missing").2
            #expect(missing1 == .notFound && missing2 == .notFound && counter.value("missing") == 2, "only 200s are stored")
            #expect(try await get("/vary", [.acceptLanguage: "en"]).0 == "en1")
            #expect(try await get("/vary", [.acceptLanguage: "fr"]).0 == "fr2", "another variant")
            #expect(try await get("/vary", [.acceptLanguage: "en"]).0 == "en1", "the first variant is still stored")
            // The handler's max-age wins over the middleware's timeout.
            let alive = AliveWindow(0.8)   // a late step on a loaded machine proves nothing about "still cached"
            let short = try await get("/max-age")
            #expect(short.0 == "1" && short.1[.cacheControl] == "max-age=1")
            let again = try await get("/max-age").0
            if alive.isOpen { #expect(again == "1") }
            try await Task.sleep(for: .milliseconds(2100))
            let later = try await get("/max-age").0
            #expect(Int(later) == (Int(again) ?? 0) + 1, "gone after its own max-age: computed again (\(again) then \(later))")
        }
    }

    @Test func aDeadCacheIsAMissNotAnError() async throws {
        let dead = try Caches(settings: ["default": CacheSettings(backend: "redis", location: ["redis://127.0.0.1:1/0"],
                                                                  options: ["CONNECT_TIMEOUT": 0.2])]).default
        let (app, counter) = app(dead)
        try await app.test(.router) { client in
            for _ in 0..<2 {
                try await client.execute(uri: "/page", method: .get) { #expect($0.status == .ok) }
            }
        }
        #expect(counter.value("page") == 2)
    }
}

/// Counts calls by name.
final class Counter: Sendable {
    private let counts = Mutex<[String: Int]>([:])
    func bump(_ name: String) -> Int { counts.locked { $0[name, default: 0] += 1; return $0[name]! } }
    func value(_ name: String) -> Int { counts.locked { $0[name, default: 0] } }
}

@Suite struct HummingbirdErrorsAndGuard {
    @Test func tandemErrorsBecomeStatusesThatSayWhatFailed() async throws {
        let dead = try Caches(settings: ["default": CacheSettings(backend: "redis", location: ["redis://127.0.0.1:1/0"],
                                                                  options: ["CONNECT_TIMEOUT": 0.2])]).default
        let router = Router()
        router.add(middleware: TandemErrorMiddleware())
        router.get("/cache") { _, _ -> String in try await dead.async.get("k") ?? "none" }
        router.get("/upstream-timeout") { _, _ -> String in throw UpstreamError.timeout(url: "http://users/1") }
        router.get("/upstream-down") { _, _ -> String in throw UpstreamError.connectFailed(url: "http://users/1", reason: "refused") }
        router.get("/bad-key") { _, _ -> String in throw CacheError.invalidKey(key: "a b", reason: "space") }
        router.get("/blocking") { _, _ -> String in try dead.get("k") ?? "none" }
        router.get("/other") { _, _ -> String in throw HTTPError(.conflict) }
        try await Application(router: router).test(.router) { client in
            for (uri, status) in [("/cache", HTTPResponse.Status.serviceUnavailable), ("/upstream-timeout", .gatewayTimeout),
                                  ("/upstream-down", .badGateway), ("/bad-key", .internalServerError),
                                  ("/blocking", .internalServerError), ("/other", .conflict)] {
                try await client.execute(uri: uri, method: .get) { #expect($0.status == status, "\(uri)") }
            }
        }
    }

    @Test func aBlockingCallInAHandlerIsRefusedOnEveryBackend() async throws {
        let router = Router()
        let cache = try AdapterBackends.cache("locmem", redisDB: 6)
        let refusal = Mutex<String?>(nil)
        router.get("/blocking") { _, _ -> String in
            do { try cache.set("k", 1) } catch { refusal.locked { $0 = "\(error)" } }
            return "done"
        }
        try await Application(router: router).test(.router) { client in
            try await client.execute(uri: "/blocking", method: .get) { #expect($0.status == .ok) }
        }
        let message = try #require(refusal.locked { $0 })
        #expect(message.contains("inside a Swift task") && message.contains(".async"), "\(message)")
    }

    @Test func aBlockingCallOnANIOLoopThreadIsRefused() async throws {
        NIOLoopGuard.install()
        let cache = try Caches(settings: ["default": CacheSettings(backend: "locmem", location: ["nio-\(UUID())"],
                                                                   options: ["ASYNC_UNSAFE": "allow"])]).default
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let result = try await group.next().submit { () -> String in
            do { try cache.set("k", 1); return "stored" } catch { return "\(error)" }
        }.get()
        try await group.shutdownGracefully()
        #expect(result.contains("on an event-loop thread") && result.contains(".async"), "refused even with ASYNC_UNSAFE=allow: \(result)")
    }
}

@Suite struct HummingbirdServices {
    @Test func tandemsServicesStopWithTheApplication() async throws {
        let caches = try Caches(settings: ["default": CacheSettings(backend: "locmem", location: ["svc-\(UUID())"])])
        let http = UpstreamClient()
        let router = Router()
        router.get("/n") { _, _ -> String in
            try await caches.default.async.set("n", 1)
            return String(try await caches.default.async.get("n") as Int? ?? 0)
        }
        var app = Application(router: router)
        app.addServices(caches, http)
        try await app.test(.live) { client in
            try await client.execute(uri: "/n", method: .get) { #expect(String(buffer: $0.body) == "1") }
        }
        #expect(caches.default.isShutDown, "the application's graceful shutdown reached the caches")
        await #expect(throws: UpstreamError.clientShutDown) { _ = try await http.async.get("http://127.0.0.1:1/") }
    }

    /// A request in flight when the application's graceful shutdown begins (what SIGTERM does) completes
    /// with 200, using the cache: Hummingbird stops its server first, and Tandem's services after it.
    @Test(.timeLimit(.minutes(1)))
    func aRequestInFlightAtShutdownCompletes() async throws {
        let caches = try Caches(settings: ["default": CacheSettings(backend: "locmem", location: ["inflight-\(UUID())"])])
        let entered = Box(Mutex(false))
        let router = Router()
        router.get("/slow") { _, _ -> String in
            entered.value.locked { $0 = true }
            try await Task.sleep(for: .milliseconds(800))
            try await caches.default.async.set("k", "finished")
            return try await caches.default.async.get("k") ?? "none"
        }
        var app = Application(router: router)
        app.addServices(caches)
        let caller = UpstreamClient()
        defer { Task { await caller.shutdown() } }
        let response = Box(Mutex<Task<UpstreamResponse, any Error>?>(nil))
        try await app.test(.live) { client in
            let port = try #require(client.port)
            response.value.locked { $0 = Task { try await caller.async.get("http://127.0.0.1:\(port)/slow") } }
            #expect(try await eventuallyAsync(30) { entered.value.locked { $0 } }, "the request reached its handler")
        }   // leaving the closure starts the application's graceful shutdown
        let r = try await #require(response.value.locked { $0 }).value
        #expect(r.status == 200 && r.text == "finished", "\(r.status) \(r.text ?? "")")
        #expect(caches.default.isShutDown)
    }
}
#endif
