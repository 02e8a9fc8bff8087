import Foundation
import Tandem
import TandemTestSupport
import Testing

private let djangoAvailable = TestServers.shouldRun(TestServers.redisURL != nil && TestServers.djangoPython != nil)

/// The fields of the `profile` value both sides write (a Python dict).
private struct SharedProfile: Codable, Equatable {
    var name: String
    var age: Int
    var tags: [String]
    var limits: [String: Int]
}

/// Tandem and a Django 5.2 app share one cache (`SERIALIZER: "django"`): each reads what the other
/// wrote, on Redis (Django's `RedisCache`) and memcached (`PyMemcacheCache`), through both faces.
/// Django's side is Integration/django/crosscheck.py, which holds the same values.
@Suite(.enabled(if: djangoAvailable, Comment(rawValue: TestServers.skipMessage)))
struct DjangoSharingTests {
    static let datetime = Date(timeIntervalSince1970: 1_765_000_000.5)
    static let uuid = UUID(uuidString: "12345678-90ab-cdef-1234-567890abcdef")!
    static let long = String(repeating: "lorem ipsum ", count: 40)
    fileprivate static let profile = SharedProfile(name: "Zoë", age: 41, tags: ["a", "b"], limits: ["daily": 5])

    /// Runs crosscheck.py; returns what it printed.
    private func django(_ backend: String, _ location: String, _ prefix: String, _ action: String, _ more: String...) async throws -> String {
        let python = try TestServers.need(TestServers.djangoPython, "a Python with Django (TANDEM_DJANGO_PYTHON)")
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Integration/django/crosscheck.py").path
        let run = try await onPlainThread { try runProgram(python, [script, backend, location, prefix, action] + more, seconds: 60) }
        if run.status != 0 { Issue.record("crosscheck.py \(action) failed (status \(run.status)): \(run.errors)") }
        return run.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Django's RedisCache, PyMemcacheCache, and django-redis with each of its compressors.
    static let djangoBackends = ["redis", "memcached", "memcached:zlib", "memcached:lzma"] + ValueCompressor.allCases.map { "django-redis:\($0.rawValue)" }
        + ["django-redis-json", "django-redis-json:zstd"]

    @Test(arguments: djangoBackends, FaceKind.allCases)
    func eachSideReadsWhatTheOtherWrote(_ backend: String, _ faceKind: FaceKind) async throws {
        let prefix = "django-\(UUID().uuidString.prefix(8))"
        let location: String
        // django-redis's JSON serializer: only values with a JSON form, read back as json.loads gives them.
        let json = backend.hasPrefix("django-redis-json")
        var options: [String: SettingValue] = ["SERIALIZER": json ? "json" : "django"]
        let memcached = backend.hasPrefix("memcached")
        if memcached {
            location = try #require(TestServers.memcachedServers.first, "memcached")
            if let compressor = backend.split(separator: ":").dropFirst().first { options["COMPRESSOR"] = .string(String(compressor)) }
        } else {
            // A database of its own: another suite's FLUSHDB must not empty it while Django reads.
            _ = try TestServers.need(TestServers.redisURL, "redis-server")
            location = RedisFixture(loop: .epoll).url
            options["COMMAND_TIMEOUT"] = 10
            if let compressor = backend.split(separator: ":").dropFirst().first { options["COMPRESSOR"] = .string(String(compressor)) }
        }
        let caches = try Caches(settings: ["default": CacheSettings(
            backend: memcached ? "memcached" : "redis", location: [location], keyPrefix: prefix, version: 3, options: options)])
        defer { caches.closeAll() }
        let face = Face(caches.default, faceKind)

        // Tandem writes; Django reads.
        try await face.set("sw:text", "héllo ☃ 😀")
        try await face.set("sw:int", 42)
        try await face.set("sw:negative", -7)
        try await face.set("sw:float", 2.5)
        try await face.set("sw:bool", true)
        if !json { try await face.set("sw:bytes", [UInt8]([0, 1, 255])) }
        try await face.set("sw:none", String?.none)
        try await face.set("sw:list", [1, 2, 3])
        try await face.set("sw:dict", ["a": 1, "b": 2])
        if !json { try await face.set("sw:set", Set(["x", "y"])) }
        try await face.set("sw:datetime", Self.datetime)
        try await face.set("sw:decimal", Decimal(string: "19.90")!)
        try await face.set("sw:uuid", Self.uuid)
        try await face.set("sw:profile", Self.profile)
        try await face.set("sw:long", Self.long)
        try await face.set("sw:counter", 3)
        try await face.set("sw:ttl", "t", timeout: .seconds(500))
        let differences = try await django(backend, location, prefix, "read")
        #expect(differences == "ok", "what Django read: \(differences)")
        #expect(try await face.get("sw:counter", as: Int.self) == 4, "Django's incr is seen here")

        // Django writes; Tandem reads.
        _ = try await django(backend, location, prefix, "write")
        #expect(try await face.get("py:text", as: String.self) == "héllo ☃ 😀")
        #expect(try await face.get("py:int", as: Int.self) == 42)
        #expect(try await face.get("py:negative", as: Int.self) == -7)
        #expect(try await face.get("py:float", as: Double.self) == 2.5)
        #expect(try await face.get("py:bool", as: Bool.self) == true)
        if !json { #expect(try await face.get("py:bytes", as: [UInt8].self) == [0, 1, 255]) }
        #expect(try await face.get("py:none", as: String?.self) == .some(nil), "a stored None, not a miss")
        #expect(try await face.get("py:list", as: [Int].self) == [1, 2, 3])
        #expect(try await face.get("py:dict", as: [String: Int].self) == ["a": 1, "b": 2])
        if !json { #expect(try await face.get("py:set", as: Set<String>.self) == ["x", "y"]) }
        #expect(try await face.get("py:datetime", as: Date.self) == Self.datetime)
        #expect(try await face.get("py:decimal", as: Decimal.self) == Decimal(string: "19.9"))
        #expect(try await face.get("py:uuid", as: UUID.self) == Self.uuid)
        #expect(try await face.get("py:profile", as: SharedProfile.self) == Self.profile)
        #expect(try await face.get("py:long", as: String.self) == Self.long)
        let unknown = try #require(try await face.get("py:profile", as: PythonValue.self))
        #expect(unknown["name"]?.string == "Zoë" && unknown["age"]?.int == 41)
        #expect(try await face.incr("py:counter", by: 5) == 15, "an int Django wrote increments here")
        // Django's one-second timeout holds here too: the value is read, then expires.
        let short = try await face.get("py:short", as: String.self)
        #expect(short == "gone soon" || short == nil)
        #expect(try await eventuallyAsync(30) { (try? await face.get("py:short", as: String.self)) == .some(nil) }, "Django's timeout expired the key")
        #expect(try await face.getMany(["py:int", "py:text", "py:missing"], as: PythonValue.self)
            == ["py:int": .int(42), "py:text": .string("héllo ☃ 😀")])
    }

    @Test(arguments: [DjangoSessionStore.Engine.cache, .cachedDB], FaceKind.allCases)
    func aUserLoggedInThroughDjangoIsSeenHereAndASessionWrittenHereLoadsInDjango(_ engine: DjangoSessionStore.Engine,
                                                                               _ faceKind: FaceKind) async throws {
        let prefix = "session-\(UUID().uuidString.prefix(8))"
        _ = try TestServers.need(TestServers.redisURL, "redis-server")
        let location = RedisFixture(loop: .epoll).url
        let engineName = engine == .cache ? "cache" : "cached_db"
        let caches = try Caches(settings: ["default": CacheSettings(
            backend: "redis", location: [location], keyPrefix: prefix, version: 3, options: ["SERIALIZER": "django", "COMMAND_TIMEOUT": 10])])
        defer { caches.closeAll() }
        let sessions = DjangoSessionStore(cache: caches.default, engine: engine)

        // Django logs a user in; Tandem reads who it is.
        let login = try await django("redis", location, prefix, "session-login", engineName).split(separator: " ").map(String.init)
        try #require(login.count == 2, "session-login printed \(login)")
        let loaded: DjangoSession?
        if faceKind == .async {
            loaded = try await sessions.load(sessionKey: login[0])
        } else {
            loaded = try await Bridge.offload { try sessions.load(sessionKey: login[0]) }
        }
        let session = try #require(loaded, "the session Django made is in the cache")
        #expect(session.userID == login[1])
        #expect(session.authBackend == "django.contrib.auth.backends.ModelBackend")
        #expect(session.data["_auth_user_hash"]?.string?.count == 64, "the session hash Django checks")

        // Tandem writes a session; Django's SessionStore loads it.
        let data: [String: PythonValue] = ["_auth_user_id": "7", "cart": .list([.int(1), .int(2)]), "theme": "dark"]
        let mine: DjangoSession
        if faceKind == .async {
            mine = try await sessions.create(data)
        } else {
            mine = DjangoSession(key: DjangoSessionStore.newKey(), data: data)
            try await Bridge.offload { try sessions.save(mine) }
        }
        #expect(try await django("redis", location, prefix, "session-check", engineName, mine.key) == "ok")

        // A cookie that is not a key Django makes is never looked up.
        #expect(try await sessions.load(sessionKey: "../\(login[0])") == nil)
        #expect(try await sessions.load(sessionKey: login[0].uppercased()) == nil)
        #expect(try await sessions.delete(sessionKey: login[0]))
        #expect(try await sessions.load(sessionKey: login[0]) == nil)
    }

    @Test func theCLIPrintsDjangosValuesAsJSONAndStoresJSONAsPythonValues() async throws {
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("tandem")
        try #require(FileManager.default.isExecutableFile(atPath: exe.path), "the tandem executable is beside the test binary")
        let prefix = "cli-\(UUID().uuidString.prefix(8))"
        _ = try TestServers.need(TestServers.redisURL, "redis-server")
        let location = RedisFixture(loop: .epoll).url
        let url = "\(location)?serializer=django&key_prefix=\(prefix)&version=3&command_timeout=10&connect_timeout=10"
        func tandem(_ args: String...) async throws -> String {
            let run = try await onPlainThread { try runProgram(exe.path, args + ["--url", url]) }
            if run.status != 0 { Issue.record("tandem \(args) failed (status \(run.status)): \(run.errors)") }
            return run.output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        _ = try await django("redis", location, prefix, "write")
        // Python's json.dumps where the value has a JSON form, Python's repr where it has not.
        #expect(try await tandem("get", "py:profile") == #"{"name": "Zo\u00eb", "age": 41, "tags": ["a", "b"], "limits": {"daily": 5}}"#)
        #expect(try await tandem("get", "py:int") == "42")
        #expect(try await tandem("get", "py:none") == "null")
        #expect(try await tandem("get", "py:datetime") == "datetime.datetime(2025, 12, 6, 5, 46, 40, 500000, tzinfo=datetime.timezone.utc)")
        #expect(try await tandem("get", "py:bytes") == #"b'\x00\x01\xff'"#)
        #expect(try await tandem("get", "py:decimal") == "Decimal('19.9')")

        _ = try await tandem("set", "cli:json", #"{"a": [1, 2.5, null, true, "x"]}"#, "--json")
        let caches = try Caches(settings: ["default": try CacheSettings(url: url)])
        defer { caches.closeAll() }
        let stored = try #require(try await caches.default.async.get("cli:json") as PythonValue?)
        #expect(stored == ["a": [1, 2.5, nil, true, "x"]])
        #expect(try await tandem("get", "cli:json") == #"{"a": [1, 2.5, null, true, "x"]}"#)
    }
}
