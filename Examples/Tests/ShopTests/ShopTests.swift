import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdTesting
import Shop
import Tandem
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The servers `Examples/test.sh` starts: Redis, memcached and nginx serving the dashboard's five
/// documents. Without them (a bare `swift test`) the tests are skipped; the script sets
/// `SHOP_REQUIRE_SERVERS=1`, so that there a missing server fails.
enum ShopServers {
    static let env = ProcessInfo.processInfo.environment
    static var redisPort: Int? { env["SHOP_TEST_REDIS_PORT"].flatMap(Int.init) }
    static var memcached: String? { env["SHOP_TEST_MEMCACHED"] }
    static var upstream: String? { env["SHOP_TEST_UPSTREAM"] }
    static var runDir: String? { env["TANDEM_RUN_DIR"] }
    static var available: Bool {
        (redisPort != nil && memcached != nil && upstream != nil) || env["SHOP_REQUIRE_SERVERS"] == "1"
    }

    static func need<T>(_ value: T?, _ name: String) throws -> T {
        guard let value else { throw ShopTestError("\(name) is not set: run Examples/test.sh") }
        return value
    }

    /// The example's settings on the test servers, under a key prefix of this test's own.
    static func caches(redisPort ownPort: Int? = nil, metrics: ShopMetrics? = nil) throws -> Caches {
        let prefix = "shop-test-\(UUID().uuidString.prefix(8))"
        let port = try ownPort ?? need(redisPort, "SHOP_TEST_REDIS_PORT")
        var settings = [
            "default": CacheSettings(backend: "redis", location: ["redis://127.0.0.1:\(port)/0"],
                                     keyPrefix: prefix, options: ["CONNECT_TIMEOUT": 0.5, "COMMAND_TIMEOUT": 2]),
            "sessions": CacheSettings(backend: "memcached", location: [try need(memcached, "SHOP_TEST_MEMCACHED")], keyPrefix: prefix),
            "pages": CacheSettings(backend: "locmem", location: [prefix], keyPrefix: prefix),
        ]
        if let metrics { for alias in settings.keys { settings[alias]?.metricsFactory = metrics.factory } }
        return try Caches(settings: settings)
    }
}

struct ShopTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Runs `body` against a shop served over real HTTP on a free loopback port.
func withShop<T: Sendable>(redisPort: Int? = nil, metrics: ShopMetrics? = nil, _ configure: (inout ShopConfiguration) -> Void = { _ in },
                           _ body: @Sendable (any TestClientProtocol, Shop) async throws -> T) async throws -> T {
    var configuration = ShopConfiguration(upstreamBase: try ShopServers.need(ShopServers.upstream, "SHOP_TEST_UPSTREAM"))
    configure(&configuration)
    var client = UpstreamClientConfiguration()
    client.metricsFactory = metrics?.factory
    let shop = Shop(caches: try ShopServers.caches(redisPort: redisPort, metrics: metrics), http: UpstreamClient(configuration: client),
                    ahc: AsyncHTTPClient.HTTPClient(eventLoopGroupProvider: .singleton), configuration: configuration, metrics: metrics)
    return try await shop.application(port: 0).test(.live) { client in try await body(client, shop) }
}

extension TestResponse {
    var text: String { String(buffer: body) }
    var json: [String: Any]? { try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] }
}

@Suite(.enabled(if: ShopServers.available, "servers not started: run Examples/test.sh"))
struct ShopViews {
    @Test func theProductPageIsReadFromRedisAfterTheFirstRequest() async throws {
        try await withShop { client, shop in
            let first = try await client.execute(uri: "/product/42", method: .get) { $0 }
            #expect(first.status == .ok && first.headers[.contentType] == "application/json")
            #expect(first.json?["name"] as? String == "Product 42")
            let stored = try #require(try await shop.caches.default.async.get("product:42") as [UInt8]?, "the page's data is in Redis")
            #expect(String(decoding: stored, as: UTF8.self) == first.text)
            let second = try await client.execute(uri: "/product/42", method: .get) { $0 }
            #expect(second.text == first.text)
            let floor = try await client.execute(uri: "/product-nocache/42", method: .get) { $0 }
            #expect(floor.text == first.text, "the floor answers the same bytes")
        }
    }

    @Test func theDashboardFansOutAndCachesItsRecommendations() async throws {
        try await withShop { client, shop in
            for uri in ["/dashboard", "/dashboard-ahc"] {
                let page = try await client.execute(uri: uri, method: .get) { $0 }
                #expect(page.status == .ok, "\(uri)")
                let json = try #require(page.json, "\(uri): \(page.text)")
                #expect(json["missing"] as? [String] == [], "\(uri): \(page.text)")
                for name in ShopConfiguration.serviceNames {
                    #expect((json[name] as? [String: Any])?["service"] as? String == name, "\(uri): \(name)")
                }
            }
            #expect(try await shop.caches.default.async.get("dashboard:recommendations") as [UInt8]? != nil)
        }
    }

    @Test func aServiceThatIsDownIsReportedMissingAndThePageStillAnswers() async throws {
        try await withShop({ config in
            config.upstreams = config.upstreams.map { $0.name == "inventory" ? ($0.name, "http://127.0.0.1:1/inventory.json") : $0 }
            config.dashboardDeadline = .seconds(2)
        }) { client, _ in
            for uri in ["/dashboard", "/dashboard-ahc"] {
                let page = try await client.execute(uri: uri, method: .get) { $0 }
                #expect(page.status == .ok)
                let json = try #require(page.json, "\(uri): \(page.text)")
                #expect(json["missing"] as? [String] == ["inventory"], "\(uri): \(page.text)")
                #expect(json["inventory"] is NSNull && (json["users"] as? [String: Any])?["service"] as? String == "users")
            }
        }
    }

    @Test func aSessionLivesInMemcachedAcrossRequests() async throws {
        try await withShop { client, _ in
            try await client.execute(uri: "/me", method: .get) { #expect($0.status == .unauthorized) }
            let cookie = try await client.execute(uri: "/login?user=ada", method: .post) { response in
                #expect(response.status == .ok)
                return try #require(response.headers[.setCookie]?.split(separator: ";").first.map(String.init))
            }
            try await client.execute(uri: "/me", method: .get, headers: [.cookie: cookie]) { #expect($0.text == "ada") }
            try await client.execute(uri: "/logout", method: .post, headers: [.cookie: cookie]) { #expect($0.status == .ok) }
            try await client.execute(uri: "/me", method: .get, headers: [.cookie: cookie]) { #expect($0.status == .unauthorized) }
            try await client.execute(uri: "/login", method: .post) { #expect($0.status == .badRequest) }
        }
    }

    @Test func theAboutPageIsCachedWhole() async throws {
        try await withShop { client, _ in
            let first = try await client.execute(uri: "/about", method: .get) { $0 }
            let second = try await client.execute(uri: "/about", method: .get) { $0 }
            #expect(first.text.contains("rendered 1 times") && second.text == first.text, "\(first.text) / \(second.text)")
            #expect(first.headers[.cacheControl] == "max-age=60" && first.headers[.age] == nil)
            #expect(second.headers[.age] != nil && second.headers[.cacheControl] == "max-age=60")
        }
    }

    /// `/metrics` serves Prometheus's text format, and the series Tandem reports move as pages are
    /// served: cache hits and misses, the upstream calls of the dashboard, Redis's connections, the loops.
    @Test func theMetricsEndpointShowsTandemsSeriesMoving() async throws {
        try await withShop(metrics: ShopMetrics()) { client, _ in
            /// The value of the first series of `name` whose labels include every one of `labels`.
            func value(_ text: String, _ name: String, _ labels: [String] = []) -> Double? {
                for line in text.split(separator: "\n") where line.hasPrefix(name + "{") || line.hasPrefix(name + " ") {
                    guard labels.allSatisfy({ line.contains($0) }), let v = line.split(separator: " ").last else { continue }
                    return Double(v)
                }
                return nil
            }
            /// The sum of every series of `name`.
            func total(_ text: String, _ name: String) -> Double {
                text.split(separator: "\n").filter { $0.hasPrefix(name + "{") || $0.hasPrefix(name + " ") }
                    .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(0, +)
            }
            let before = try await client.execute(uri: "/metrics", method: .get) { $0 }
            #expect(before.status == .ok && before.headers[.contentType]?.hasPrefix("text/plain") == true)
            for _ in 0..<3 { try await client.execute(uri: "/product/7", method: .get) { #expect($0.status == .ok) } }
            try await client.execute(uri: "/dashboard", method: .get) { #expect($0.status == .ok) }
            let text = try await client.execute(uri: "/metrics", method: .get) { $0.text }
            #expect((value(text, "tandem_cache_hits_total", [#"alias="default""#]) ?? 0) >= 2, "two of three product pages were hits")
            #expect((value(text, "tandem_cache_misses_total", [#"alias="default""#]) ?? 0) >= 1)
            #expect((value(text, "http_client_request_duration_count", [#"http_request_method="GET""#, #"http_response_status_code="200""#]) ?? 0) >= 1,
                    "the dashboard's upstream calls were timed")
            #expect(value(text, "db_client_connection_count", [#"db_system_name="redis""#, #"db_client_connection_state="used""#]) != nil)
            #expect(total(text, "tandem_event_loop_tasks") > 0, "the loops ran work")
            // Every name is one Prometheus accepts.
            for line in text.split(separator: "\n") where line.hasPrefix("# TYPE ") {
                let name = line.split(separator: " ")[2]
                #expect(name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" }, "\(name)")
            }
        }
    }

    @Test func theVisitCounterIsAtomic() async throws {
        try await withShop { client, _ in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<20 {
                    group.addTask { try await client.execute(uri: "/visits", method: .post) { #expect($0.status == .ok) } }
                }
                try await group.waitForAll()
            }
            try await client.execute(uri: "/visits", method: .get) { #expect($0.text == "20") }
        }
    }
}

/// Redis stopped and started again under the running shop: while it is down the product page is a
/// 503 (a dependency failed, logged), not a hang and not an anonymous 500; once it is back the page
/// answers again, with no restart of the shop. The test runs a Redis of its own, so that the other
/// tests' server stays up.
@Suite(.enabled(if: ShopServers.available, "servers not started: run Examples/test.sh"))
struct ShopUnderARedisRestart {
    @Test(.timeLimit(.minutes(2)))
    func theProductPageRecoversWhenRedisComesBack() async throws {
        let redis = try OwnRedis(runDir: try ShopServers.need(ShopServers.runDir, "TANDEM_RUN_DIR"))
        try await redis.start()
        defer { redis.kill() }
        try await withShop(redisPort: redis.port) { client, _ in
            try await client.execute(uri: "/product/1", method: .get) { #expect($0.status == .ok) }
            try await redis.stop()
            try await client.execute(uri: "/product/2", method: .get) { #expect($0.status == .serviceUnavailable) }
            try await redis.start()
            var status: HTTPResponse.Status = .serviceUnavailable
            let deadline = ContinuousClock.now + .seconds(20)
            while status != .ok && ContinuousClock.now < deadline {
                status = try await client.execute(uri: "/product/3", method: .get) { $0.status }
                if status != .ok { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(status == .ok, "the page answers again once Redis is back")
        }
    }
}

/// A redis-server of the test's own on a free port, in the foreground (no pipes: nothing the test
/// reads can be held open by it). Its PID goes to `$TANDEM_RUN_DIR/spawned.pids`, which the test
/// script's `stop_all` kills should the test die first.
final class OwnRedis: Sendable {
    let port: Int
    let runDir: String
    private let process = Mutex<Process?>(nil)

    init(runDir: String) throws {
        self.runDir = runDir
        port = try OwnRedis.freePort()
    }

    func start() async throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        p.arguments = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", runDir,
                       "--logfile", "\(runDir)/redis-own-\(port).log"]
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        process.withLock { $0 = p }
        if let record = FileHandle(forWritingAtPath: "\(runDir)/spawned.pids") {
            record.seekToEndOfFile()
            record.write(Data("\(p.processIdentifier)\n".utf8))
            try? record.close()
        } else {
            try Data("\(p.processIdentifier)\n".utf8).write(to: URL(fileURLWithPath: "\(runDir)/spawned.pids"))
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while !OwnRedis.accepts(port) {
            guard ContinuousClock.now < deadline else { throw ShopTestError("redis-server on \(port) did not start") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Kills it (SIGKILL: the test process may ignore SIGTERM for its service group, and a child
    /// inherits that), then waits (bounded) until the port is closed.
    func stop() async throws {
        kill()
        let deadline = ContinuousClock.now + .seconds(10)
        while OwnRedis.accepts(port) {
            guard ContinuousClock.now < deadline else { throw ShopTestError("redis-server on \(port) did not stop") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    func kill() {
        process.withLock { p in
            if let p { _ = Glibc.kill(p.processIdentifier, SIGKILL) }
            p = nil
        }
    }

    /// Whether something accepts connections on the loopback port.
    static func accepts(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    /// A port below Linux's ephemeral range that nothing listens on.
    static func freePort() throws -> Int {
        for _ in 0..<200 {
            let port = Int.random(in: 20_000..<32_000)
            if !accepts(port) { return port }
        }
        throw ShopTestError("no free port")
    }
}

/// Settings the shop does not understand stop it at start (no servers needed).
@Suite struct ShopSettings {
    @Test func settingsItDoesNotUnderstandAreRefused() throws {
        for bad in [["SHOP_UPSTREAM": "ftp://127.0.0.1"], ["SHOP_UPSTREAM": "not a url"], ["SHOP_DASHBOARD_DEADLINE_MS": "soon"],
                    ["SHOP_DASHBOARD_DEADLINE_MS": "0"], ["SHOP_DASHBOARD_DEADLINE_MS": "-5"]] {
            #expect(throws: ShopError.self, "\(bad)") { try ShopConfiguration.fromEnvironment(bad) }
        }
        let good = try ShopConfiguration.fromEnvironment(["SHOP_UPSTREAM": "http://127.0.0.1:9", "SHOP_DASHBOARD_DEADLINE_MS": "250"])
        #expect(good.dashboardDeadline == .milliseconds(250))
        #expect(good.upstreams.map(\.url).first == "http://127.0.0.1:9/users.json" && good.upstreams.count == 5)
    }
}
