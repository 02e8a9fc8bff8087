import Foundation
import Synchronization
import Tandem
@testable import TandemRedis
import TandemTestSupport
import Testing
@_spi(Backend) import TandemRedis
@_spi(Backend) import TandemCache

private let serversAvailable = TestServers.shouldRun(TestServers.redisURL != nil)

/// Runs the `redis-cli` binary against the test server.
private func redisCLI(_ args: [String]) async throws -> String {
    let port = try #require(TestServers.redisURL.flatMap(TestServers.hostPort)?.1)
    return try await onPlainThread { try runRedisCLI(port: port, args) }
}

private func runRedisCLI(port: Int, _ args: [String]) throws -> String {
    try runProgram("/usr/bin/redis-cli", ["-p", String(port)] + args).output.trimmingCharacters(in: .whitespacesAndNewlines)
}

private func isError<E: Error>(_ e: any Error, _ type: E.Type, _ match: (E) -> Bool = { _ in true }) -> Bool {
    (e as? E).map(match) ?? false
}

@Suite(.enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)))
struct RedisBackendTests {
    @Test(arguments: TestLoops.Kind.allCases)
    func valuesAreReadableByRedisCLI(_ loop: TestLoops.Kind) async throws {
        let fx = RedisFixture(loop: loop)
        let cache = try fx.makeCache { $0.keyPrefix = "cli" }
        try await cache.async.set("text", "hello world")
        try await cache.async.set("number", 42)
        try await onPlainThread { try cache.set("blocking", "from the blocking face") }
        #expect(try await redisCLI(["-n", String(fx.db), "GET", "cli:1:text"]) == "hello world")
        #expect(try await redisCLI(["-n", String(fx.db), "GET", "cli:1:number"]) == "42")
        #expect(try await redisCLI(["-n", String(fx.db), "GET", "cli:1:blocking"]) == "from the blocking face")
        _ = try await redisCLI(["-n", String(fx.db), "INCRBY", "cli:1:number", "8"])
        #expect(try await cache.async.get("number") == 50)
    }

    @Test(arguments: TestLoops.Kind.allCases)
    func keysWithCRLFSpaceAndNULCannotInjectCommands(_ loop: TestLoops.Kind) async throws {
        let fx = RedisFixture(loop: loop)
        let cache = try fx.makeCache()
        let evil = [
            "a\r\nFLUSHALL\r\n",
            "b\r\n*1\r\n$8\r\nFLUSHALL\r\n",
            "c SET injected 1",
            "d\u{0}SET injected 1",
            "e\nDEL victim",
        ]
        _ = try await fx.raw(["SET", "victim", "still here"])
        for (i, key) in evil.enumerated() {
            try await cache.async.set(key, "async-\(i)")
            #expect(try await cache.async.get(key) == "async-\(i)")
            try await onPlainThread { try cache.set(key + "-b", "blocking-\(i)") }
            #expect(try await onPlainThread { try cache.get(key + "-b") as String? } == "blocking-\(i)")
        }
        // Exactly the intended keys exist: the victim plus two per evil key, nothing else.
        #expect(try await fx.raw(["DBSIZE"]) == ":\(1 + 2 * evil.count)")
        #expect(try await fx.raw(["GET", "victim"]) == "$still here")
        #expect(try await fx.raw(["EXISTS", "injected"]) == ":0")
        #expect(try await fx.raw(["GET", ":1:" + evil[0]]) == "$async-0")
    }

    @Test func replicaPathReadsWhatThePrimaryWrote() async throws {
        let primary = try TestServers.need(TestServers.redisURL, "redis primary")
        let replica = try TestServers.need(TestServers.redisReplicaURL, "redis replica")
        let db = RedisFixture(loop: .epoll).db
        let cache = try Caches(settings: ["default": CacheSettings(backend: "redis", location: ["\(primary)/\(db)", "\(replica)/\(db)"],
                                                                     options: ["COMMAND_TIMEOUT": 10])]).default
        try await cache.async.set("replicated", "yes")
        var seen: String?
        for _ in 0..<200 {
            seen = try await cache.async.get("replicated")
            if seen != nil { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(seen == "yes", "the write reached the replica and the read came through the replica path")
        #expect(try await onPlainThread { try cache.get("replicated") as String? } == "yes")
    }

    @Test(arguments: TestLoops.Kind.allCases)
    func readsNeverGoToThePrimaryWhenReplicasExist(_ loop: TestLoops.Kind) async throws {
        // The "replica" here is another database that nothing replicates into: a read that went to the
        // primary would find the value, a read from the replica path cannot.
        let primary = RedisFixture(loop: loop)
        let fakeReplica = RedisFixture(loop: loop)
        let cache = try primary.makeCache { $0.location = [primary.url, fakeReplica.url] }
        for i in 0..<20 {
            try await cache.async.set("k\(i)", "v")
            try await onPlainThread { try cache.set("b\(i)", "v") }
        }
        for i in 0..<20 {
            #expect(try await cache.async.get("k\(i)") as String? == nil)
            #expect(try await cache.async.hasKey("k\(i)") == false)
            #expect(try await onPlainThread { try cache.get("b\(i)") as String? } == nil)
        }
        #expect(try await cache.async.getMany(["k1", "k2"]) as [String: String] == [:])
        _ = try await fakeReplica.raw(["SET", ":1:k1", "from-replica"])
        #expect(try await cache.async.get("k1") == "from-replica")
        #expect(try await primary.raw(["GET", ":1:k1"]) == "$v", "writes went to the primary")
    }

    @Test(arguments: TestLoops.Kind.allCases)
    func authWithPasswordAndACLUserAndFailure(_ loop: TestLoops.Kind) async throws {
        let port = try TestServers.need(TestServers.redisAuthPort, "redis auth instance")
        func cache(_ url: String, options: [String: SettingValue] = [:]) throws -> Cache {
            try testCache("redis", [url], options: options, alias: "auth", loop: loop)
        }
        let withPassword = try cache("redis://:tandem-secret@127.0.0.1:\(port)/3")
        try await withPassword.async.set("k", "v")
        #expect(try await withPassword.async.get("k") == "v")
        #expect(try await onPlainThread { try withPassword.get("k") as String? } == "v")

        let aclUser = try cache("redis://tandemuser:tandem-user-pw@127.0.0.1:\(port)/3")
        #expect(try await aclUser.async.get("k") == "v")
        #expect(try await onPlainThread { try aclUser.get("k") as String? } == "v")
        let viaOptions = try cache("redis://127.0.0.1:\(port)/3", options: ["USERNAME": "tandemuser", "PASSWORD": "tandem-user-pw"])
        #expect(try await viaOptions.async.get("k") == "v")

        let wrong = try cache("redis://tandemuser:wrong-pw@127.0.0.1:\(port)/3")
        #expect(!wrong.backend.backendDescription.contains("wrong-pw"))
        for attempt in 0..<2 {
            do {
                _ = try await wrong.async.get("k") as String?
                Issue.record("async get with a wrong password succeeded")
            } catch let e as CacheError {
                #expect(!e.description.contains("wrong-pw"))
                if attempt == 0, e.code == .authenticationFailed, let reason = e.reason { #expect(reason.contains("WRONGPASS")) }
                else if attempt == 0 { Issue.record("expected authenticationFailed, got \(e)") }
            }
        }
        do {
            _ = try await onPlainThread { try wrong.get("k") as String? }
            Issue.record("blocking get with a wrong password succeeded")
        } catch let e as CacheError {
            guard e.code == .authenticationFailed else { Issue.record("expected authenticationFailed, got \(e)"); return }
            #expect(!e.description.contains("wrong-pw"))
        }
        let none = try cache("redis://127.0.0.1:\(port)/3")
        await #expect(throws: CacheError.self) { _ = try await none.async.get("k") as String? }
    }

    @Test(arguments: TestLoops.Kind.allCases)
    func databaseSelectionIsolates(_ loop: TestLoops.Kind) async throws {
        let a = try RedisFixture(loop: loop).makeCache()
        let b = try RedisFixture(loop: loop).makeCache()
        try await a.async.set("same", "in a")
        try await onPlainThread { try b.set("same", "in b") }
        #expect(try await a.async.get("same") == "in a")
        #expect(try await b.async.get("same") == "in b")
        try await a.async.clear()
        #expect(try await b.async.get("same") == "in b", "FLUSHDB stays in its database")
    }

    @Test(arguments: TestLoops.Kind.allCases)
    func tenThousandConcurrentAsyncGetsEachGetTheirOwnValue(_ loop: TestLoops.Kind) async throws {
        // A generous command timeout: this is about each caller getting its own value, and under a
        // sanitizer 10,000 callers on two cores take a while. A loop of its own: this flood would
        // otherwise hold up every other test on the shared loop for seconds.
        let own = loop.makePrivateLoop("redis-ten-thousand")
        defer { own.shutdown() }
        let fx = RedisFixture(loop: loop, on: own, options: ["COMMAND_TIMEOUT": 60])
        let cache = try fx.makeCache()
        let n = 10_000
        var items: [String: String] = [:]
        for i in 0..<n { items["key-\(i)"] = "value-\(i)" }
        #expect(try await cache.async.setMany(items) == [])
        let wrong = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<n {
                group.addTask { try await cache.async.get("key-\(i)") == "value-\(i)" ? 0 : 1 }
            }
            return try await group.reduce(0, +)
        }
        #expect(wrong == 0)
    }

    @Test(arguments: TestLoops.Kind.allCases)
    func deadServerFailsFastWithATypedError(_ loop: TestLoops.Kind) async throws {
        let port = try freeLoopbackPort()  // nothing listens there
        let cache = try BackendRegistry.standard.makeCache(
            alias: "dead", settings: CacheSettings(backend: "redis", location: ["redis://127.0.0.1:\(port)"]), loop: loop.loop)
        for _ in 0..<3 {
            do {
                _ = try await cache.async.get("k") as String?
                Issue.record("get on a dead server succeeded")
            } catch let e as CacheError {
                guard e.code == .connectionFailed, let server = e.server else { Issue.record("unexpected \(e)"); continue }
                #expect(server.contains(String(port)))
            }
        }
        await #expect(throws: CacheError.self) { _ = try await onPlainThread { try cache.get("k") as String? } }
    }

    @Test func blockingFaceInsideATaskIsRefusedUnlessAllowed() async throws {
        let fx = RedisFixture(loop: .epoll)
        let cache = try fx.makeCache()
        #expect(throws: TandemError.self) { try cache.set("k", "v") }
        let allowed = try fx.makeCache { $0.options["ASYNC_UNSAFE"] = "allow" }
        try allowed.set("k", "v")
        #expect(try allowed.get("k") == "v")
    }

    @Test func settingsErrors() throws {
        func error(_ s: CacheSettings) -> CacheError? {
            do { _ = try BackendRegistry.standard.makeCache(alias: "r", settings: s, loop: nil); return nil } catch { return error as? CacheError }
        }
        #expect(error(CacheSettings(backend: "redis", location: ["rediss://127.0.0.1:6380?ssl_cert_reqs=maybe"]))?.description.contains("ssl_cert_reqs") == true)
        #expect(error(CacheSettings(backend: "redis", location: []))?.description.contains("LOCATION") == true)
        #expect(error(CacheSettings(backend: "redis", location: ["redis://h:notaport"]))?.description.contains("LOCATION") == true)
        #expect(error(CacheSettings(backend: "redis", location: ["redis://127.0.0.1:6379/x"]))?.description.contains("database") == true)
        #expect(error(CacheSettings(backend: "redis", location: ["redis://127.0.0.1:6379"], options: ["POOL_SIZE": "big"]))?.description.contains("OPTIONS.POOL_SIZE") == true)
        #expect(error(CacheSettings(backend: "redis", location: ["redis://127.0.0.1:6379"], options: ["SOCKET_TIMEOUT": 1]))?.description.contains("unknown option") == true)
        let secret = error(CacheSettings(backend: "redis", location: ["rediss://u:hunter2@127.0.0.1:6380?ssl_cert_reqs=maybe"]))
        #expect(secret != nil && !(secret?.description.contains("hunter2") ?? true))
        let dotted = try BackendRegistry.standard.makeCache(
            alias: "r", settings: CacheSettings(backend: "django.core.cache.backends.redis.RedisCache", location: ["redis://127.0.0.1:6379/2"]), loop: nil)
        #expect(dotted.backend.backendDescription == "redis://127.0.0.1:6379/2")
        let unix = try BackendRegistry.standard.makeCache(
            alias: "r", settings: CacheSettings(backend: "redis", location: ["unix:///tmp/redis.sock?db=4"]), loop: nil)
        #expect(unix.backend.backendDescription == "unix:///tmp/redis.sock?db=4")
    }
}

/// Tests that stall the server or kill its connections: on their own Redis instance, one at a time.
@Suite(.serialized, .enabled(if: TestServers.shouldRun(TestServers.redisChaosURL != nil), Comment(rawValue: TestServers.skipMessage)))
struct RedisFaultTests {
    @Test(arguments: TestLoops.Kind.allCases)
    func commandTimeoutFailsOnlyInFlightCommandsAndRecovers(_ loop: TestLoops.Kind) async throws {
        // A server of its own, frozen with SIGSTOP while the commands are in flight: however late
        // they are sent (a loaded machine), they can only end by their timeout.
        let server = try await onPlainThread { try ServerProcess(.redis) }
        defer { server.stop() }
        let cache = try Caches(settings: ["default": CacheSettings(backend: "redis", location: [server.redisURL],
                                                                   options: ["COMMAND_TIMEOUT": 0.3])], loop: loop.loop).default
        // Outside the stall the 0.3 s timeout is only a bound, and a loaded machine (the sanitizer
        // phases run beside other suites) can pass it: the steps around the stall retry until they
        // succeed, within a bound of their own.
        #expect(try await eventuallyAsync(20) { (try? await cache.async.set("k", "v")) != nil }, "the first write lands")
        #expect(try await eventuallyAsync(20) { (try? await cache.async.get("k") as String?) == "v" })
        #expect(try await eventuallyAsync(20) {  // a pooled connection exists
            (try? await onPlainThread { try cache.get("k") as String? }) == "v"
        })
        server.pause(true)
        // In flight during the stall: async gets, and a blocking get. Had they waited for the server to
        // wake up they would have read "v"; a timeout error proves they gave up at the command timeout.
        let blocking = Task.detached { () -> Result<String?, any Error> in
            do { return .success(try await onPlainThread { try cache.get("k") as String? }) } catch { return .failure(error) }
        }
        let results = await withTaskGroup(of: Result<String?, any Error>.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    do { return .success(try await cache.async.get("k") as String?) } catch { return .failure(error) }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        func isTimeout(_ r: Result<String?, any Error>) -> Bool {
            if case .failure(let e) = r, (e as? CacheError)?.code == .timeout { return true }
            return false
        }
        #expect(results.allSatisfy(isTimeout), "every in-flight async command failed with a timeout: \(results)")
        #expect(isTimeout(await blocking.value), "the blocking command failed with a timeout too")
        server.pause(false)
        #expect(try await eventuallyAsync(20) { (try? await cache.async.get("k") as String?) == "v" },
                "async face works again after the stall")
        #expect(try await eventuallyAsync(20) { (try? await onPlainThread { try cache.get("k") as String? }) == "v" },
                "blocking face too")
    }

    /// An idempotent command whose connection the server closes before answering (here a scripted
    /// server that hangs up on a command left unanswered) is sent once more on a new connection, and
    /// answered: the caller never sees the close. EXISTS meets the first connection's hang-up, SET the
    /// second's.
    @Test(arguments: TestLoops.Kind.allCases)
    func anIdempotentCommandWhoseConnectionTheServerClosesIsSentOnceMore(_ loop: TestLoops.Kind) async throws {
        let (listener, port) = try silentListener()
        defer { close(listener) }
        let served = startOnPlainThread { () -> [String] in
            var seen: [String] = []
            var buf = [UInt8](repeating: 0, count: 4096)
            var tv = timeval(tv_sec: 60, tv_usec: 0)
            setsockopt(listener, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            /// The next command on `fd` ("EXISTS", "SET" or "?"), nil when the connection ended.
            func command(_ fd: Int32) -> String? {
                let n = recv(fd, &buf, buf.count, 0)
                guard n > 0 else { return nil }
                let text = String(decoding: buf[0..<n], as: UTF8.self)
                return text.contains("EXISTS") ? "EXISTS" : text.contains("SET") ? "SET" : "?"
            }
            func answer(_ fd: Int32, _ reply: String) {
                _ = Array(reply.utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
            // 1st connection: the EXISTS, unanswered, then hang up.
            let first = accept(listener, nil, nil)
            guard first >= 0, let c1 = command(first) else { return seen }
            seen.append("1:" + c1)
            close(first)
            // 2nd: the EXISTS again, answered; then the SET, unanswered, and hang up.
            let second = accept(listener, nil, nil)
            guard second >= 0, let c2 = command(second) else { return seen }
            seen.append("2:" + c2)
            answer(second, ":1\r\n")
            if let c3 = command(second) { seen.append("2:" + c3) }
            close(second)
            // 3rd: the SET again, answered.
            let third = accept(listener, nil, nil)
            guard third >= 0, let c4 = command(third) else { return seen }
            seen.append("3:" + c4)
            answer(third, "+OK\r\n")
            close(third)
            return seen
        }
        let cache = try BackendRegistry.standard.makeCache(
            alias: "closing", settings: CacheSettings(backend: "redis", location: ["redis://127.0.0.1:\(port)"],
                                                      options: ["CONNECT_TIMEOUT": 30, "COMMAND_TIMEOUT": 30]),
            loop: loop.loop)
        #expect(try await cache.async.hasKey("k"), "EXISTS answered on the second connection")
        try await cache.async.set("k", "v")  // answered on the third
        #expect(try await served.value() == ["1:EXISTS", "2:EXISTS", "2:SET", "3:SET"], "each command seen twice, on two connections")
    }

    @Test(arguments: TestLoops.Kind.allCases)
    func killedConnectionsAreReplacedOnTheNextCommand(_ loop: TestLoops.Kind) async throws {
        let fx = RedisFixture(loop: loop, chaos: true)
        let cache = try fx.makeCache()
        try await cache.async.set("k", "v")
        #expect(try await onPlainThread { try cache.get("k") as String? } == "v")
        // Kill every normal client connection except the one sending the command. No pause after it:
        // the next read may reach the async connection before its loop has seen the close, and is
        // then sent once more on a new connection (reads are idempotent).
        let killed = try await fx.raw(["CLIENT", "KILL", "TYPE", "normal"])
        #expect(killed.hasPrefix(":"))
        #expect(try await cache.async.get("k") == "v", "the next async command succeeds")
        #expect(try await cache.async.hasKey("k"), "and the one after it")
        #expect(try await onPlainThread { try cache.get("k") as String? } == "v", "the next blocking command succeeds")
    }

}

@Suite(.enabled(if: TestServers.shouldRun(TestServers.redisURL != nil), Comment(rawValue: TestServers.skipMessage)))
struct RedisManyKeysTests {
    @Test(arguments: TestLoops.Kind.allCases)
    func getManyAndDeleteManyOfManyKeysInOneCommand(_ loop: TestLoops.Kind) async throws {
        let cache = try RedisFixture(loop: loop).makeCache()
        let items = Dictionary(uniqueKeysWithValues: (0..<3000).map { ("many-\($0)", $0) })
        #expect(try await cache.async.setMany(items) == [])
        let keys = Array(items.keys) + ["absent-1", "absent-2"]
        let got: [String: Int] = try await cache.async.getMany(keys)
        #expect(got == items)
        let gotBlocking: [String: Int] = try await onPlainThread { try cache.getMany(keys) }
        #expect(gotBlocking == items)
        try await onPlainThread { try cache.deleteMany(Array(items.keys)) }
        #expect(try await cache.async.getMany(keys) as [String: Int] == [:])
    }
}

/// `incr` and `touch(.never)` run their Lua scripts by digest.
@Suite(.enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)))
struct RedisScriptTests {
    /// `cmdstat_<name>` calls from `INFO commandstats` (0 when the command never ran).
    private func calls(_ port: Int, _ name: String) async throws -> Int {
        let info = try await onPlainThread { try redisCommand(port: port, ["INFO", "commandstats"]) }
        guard let line = info.components(separatedBy: "\r\n").first(where: { $0.hasPrefix("cmdstat_\(name):calls=") }) else { return 0 }
        return Int(line.dropFirst("cmdstat_\(name):calls=".count).prefix { $0.isNumber }) ?? -1
    }

    @Test(.timeLimit(.minutes(3)), arguments: TestLoops.Kind.allCases)
    func scriptsGoByDigestAndAreLoadedAgainAfterAFlush(_ loop: TestLoops.Kind) async throws {
        let server = try await onPlainThread { try ServerProcess(.redis) }
        defer { server.stop() }
        // The digests Tandem sends are the server's own for the scripts' sources.
        for (source, sha) in [(RedisBackend.incrScript, RedisBackend.incrScriptSHA), (RedisBackend.persistScript, RedisBackend.persistScriptSHA),
                              (RedisBackend.deleteIfEqualScript, RedisBackend.deleteIfEqualScriptSHA)] {
            let loaded = try await onPlainThread { try redisCommand(port: server.port, ["SCRIPT", "LOAD", String(decoding: source, as: UTF8.self)]) }
            #expect(loaded.contains(String(decoding: sha, as: UTF8.self)), "SCRIPT LOAD answered \(loaded.debugDescription)")
        }
        // A generous command timeout: under ThreadSanitizer on a busy machine a call once took more than the default second.
        let cache = try Caches(settings: ["default": CacheSettings(backend: "redis", location: [server.redisURL], options: ["COMMAND_TIMEOUT": 10])],
                               loop: loop.loop).default
        try await cache.async.set("n", 1)
        try await onPlainThread { try cache.set("m", 1) }
        for round in 0..<2 {
            // An empty script cache (a restarted server, SCRIPT FLUSH, a failover): both faces still work.
            _ = try await onPlainThread { try redisCommand(port: server.port, ["SCRIPT", "FLUSH"]) }
            let evalBefore = try await calls(server.port, "eval")
            #expect(try await cache.async.incr("n", by: 2) == (round == 0 ? 3 : 15))
            #expect(try await onPlainThread { try cache.incr("m", by: 3) } == (round == 0 ? 4 : 17))
            #expect(try await cache.async.touch("n", timeout: .never))
            #expect(try await calls(server.port, "eval") - evalBefore <= 3, "after a flush, each script is sent as EVAL once per face at most")
            // Loaded again: from now on only digests travel.
            let evalAfter = try await calls(server.port, "eval")
            let shaBefore = try await calls(server.port, "evalsha")
            for _ in 0..<10 {
                _ = try await cache.async.incr("n")
                _ = try await onPlainThread { try cache.incr("m") }
                _ = try await cache.async.touch("n", timeout: .never)
                _ = try await onPlainThread { try cache.touch("m", timeout: .never) }
            }
            #expect(try await calls(server.port, "eval") == evalAfter, "no EVAL once the scripts are loaded")
            #expect(try await calls(server.port, "evalsha") - shaBefore == 40, "every incr and touch(.never) went by digest")
        }
        #expect(try await cache.async.get("n") == 1 + 2 + 10 + 2 + 10)
        #expect(try await onPlainThread { try cache.get("m") as Int? } == 1 + 3 + 10 + 3 + 10)
    }
}

/// A Redis cache on a loop group: a connection per loop, each caller served by its own loop's.
@Suite(.enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)))
struct RedisLoopGroupTests {
    private func cache(on group: TandemEventLoopGroup, options: [String: SettingValue] = [:]) throws -> (Cache, RedisBackend) {
        let url = try TestServers.need(TestServers.redisURL, "redis primary") + "/4093"
        let cache = try Caches(settings: ["default": CacheSettings(backend: "redis", location: [url], keyPrefix: "group-\(UUID().uuidString)",
                                                                   options: ["COMMAND_TIMEOUT": 10].merging(options) { $1 })],
                               loopGroup: group).default
        return (cache, try #require(cache.backend as? RedisBackend))
    }

    @Test func connectionsAreSpreadOverTheLoopsAndCallersUseTheirOwnLoops() async throws {
        let group = TandemEventLoopGroup(loops: [EpollEventLoop(name: "redis-group-e"), DispatchEventLoop(name: "redis-group-d")])
        defer { group.shutdown() }
        let (cache, backend) = try cache(on: group)
        let conns = backend.primary.connections
        #expect(conns.map { ObjectIdentifier($0.loop) } == group.loops.map { ObjectIdentifier($0) }, "ASYNC_CONNECTIONS defaults to one per loop, in order")
        for (i, loop) in group.loops.enumerated() {
            let chosen = try await withLoopPromise(on: loop) { (p: LoopPromise<[Int]>) in
                p.succeed((0..<4).map { _ in ObjectIdentifier(backend.primary.connection) == ObjectIdentifier(conns[0]) ? 0 : 1 })
            }
            #expect(chosen == [Int](repeating: i, count: 4), "a caller on loop \(i) is served by that loop's connection")
        }
        // Off the loops (each cooperative thread on the connection it was given): every caller gets its own value back.
        let keys = (0..<400).map { "k\($0)" }
        #expect(try await tasksNotReadingTheirOwnWrites(cache, keys) == 0)
        let blockingRead = try await onPlainThread { () throws -> [String: String] in try cache.getMany(keys) }
        #expect(blockingRead.count == 400 && blockingRead["k7"] == "v-k7", "the blocking face reads what both loops' connections wrote")
        try await cache.async.deleteMany(keys)
    }

    @Test func moreConnectionsThanLoopsTakeTheLoopsInTurn() async throws {
        let group = TandemEventLoopGroup(count: 2, name: "redis-group-n")
        defer { group.shutdown() }
        let (cache, backend) = try cache(on: group, options: ["ASYNC_CONNECTIONS": 5])
        let loops = group.loops.map { ObjectIdentifier($0) }
        #expect(backend.primary.connections.map { ObjectIdentifier($0.loop) } == [loops[0], loops[1], loops[0], loops[1], loops[0]])
        // Every connection carries commands: a caller on loop 0 takes its three in turn, on loop 1 its two.
        let conns = backend.primary.connections.map { ObjectIdentifier($0) }
        for (loop, expected) in [(group.loops[0], [0, 2, 4]), (group.loops[1], [1, 3])] {
            let used = try await withLoopPromise(on: loop) { (p: LoopPromise<[Int]>) in
                p.succeed((0..<6).compactMap { _ in conns.firstIndex(of: ObjectIdentifier(backend.primary.connection)) })
            }
            #expect(Set(used) == Set(expected), "connections used from that loop: \(used)")
        }
        try await cache.async.set("n", 7)
        #expect(try await cache.async.incr("n", by: 3) == 10)
    }
}
