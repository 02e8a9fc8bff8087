import Foundation
import Tandem
import TandemTestSupport
import Testing
@_spi(Backend) import TandemCache

private let sentinelsAvailable = TestServers.shouldRun(TestServers.redisSentinels != nil)

/// Finding the primary through the sentinels (the failover itself is in the fault suite: it swaps
/// the test servers' roles).
@Suite(.enabled(if: sentinelsAvailable, Comment(rawValue: TestServers.skipMessage)))
struct RedisSentinelTests {
    /// A cache from JSON settings whose LOCATION is the string `location` (as Django's settings give it).
    static func cache(_ location: String, loop: TestLoops.Kind = .epoll) throws -> Cache {
        let json = #"{"default": {"BACKEND": "redis", "LOCATION": "\#(location)", "OPTIONS": {"CONNECT_TIMEOUT": 10, "COMMAND_TIMEOUT": 10}}}"#
        return try Caches(json: Data(json.utf8), loop: loop.loop).default
    }

    @Test func aLocationStringWithSeveralSentinelsIsOneLocation() throws {
        // Django splits a LOCATION string on ',' and ';' (several servers); a sentinel URL stays whole.
        let cache = try Self.cache("redis+sentinel://127.0.0.1:1,127.0.0.1:2/svc/3")
        #expect(cache.backend.backendDescription == "redis+sentinel://127.0.0.1:1,127.0.0.1:2/svc/3")
        let settings = try CacheSettings(url: "redis+sentinel://127.0.0.1:1,127.0.0.1:2/svc?db=4&timeout=60")
        #expect(settings.location == ["redis+sentinel://127.0.0.1:1,127.0.0.1:2/svc?db=4"])
    }

    @Test(arguments: FaceKind.allCases, TestLoops.Kind.allCases)
    func aDeadSentinelIsPassedOverAndTheOthersAnswer(_ face: FaceKind, _ loop: TestLoops.Kind) async throws {
        let sentinels = try TestServers.need(TestServers.redisSentinels, "redis sentinels")
        let cache = try Self.cache("redis+sentinel://127.0.0.1:1,\(sentinels)/\(TestServers.redisSentinelService)/9", loop: loop)
        let f = Face(cache, face)
        try await f.set("through-sentinel", "yes")
        #expect(try await f.get("through-sentinel", as: String.self) == "yes")
    }

    @Test(arguments: FaceKind.allCases)
    func anUnknownServiceIsATypedErrorNamingIt(_ face: FaceKind) async throws {
        let sentinels = try TestServers.need(TestServers.redisSentinels, "redis sentinels")
        let cache = try Self.cache("redis+sentinel://\(sentinels)/no-such-service")
        do {
            try await Face(cache, face).set("k", "v")
            Issue.record("a write went somewhere for a service no sentinel knows")
        } catch let error as CacheError where error.code == .connectionFailed {
            let (server, reason) = (error.server ?? "", error.reason ?? "")
            #expect(server.contains("no-such-service"))
            #expect(reason.contains("does not know the service"), Comment(rawValue: reason))
        }
    }

    @Test(arguments: FaceKind.allCases, TestLoops.Kind.allCases)
    func readsGoToTheReplicaWhenAskedAndWritesToThePrimary(_ face: FaceKind, _ loop: TestLoops.Kind) async throws {
        let sentinels = try TestServers.need(TestServers.redisSentinels, "redis sentinels")
        let replicaPort = try await SentinelServers.healthyReplicaPort()
        let json = #"{"default": {"BACKEND": "redis", "LOCATION": "redis+sentinel://\#(sentinels)/\#(TestServers.redisSentinelService)/11", "#
            + #""OPTIONS": {"CONNECT_TIMEOUT": 10, "COMMAND_TIMEOUT": 10, "READ_FROM_REPLICAS": true}}}"#
        let cache = try Caches(json: Data(json.utf8), loop: loop.loop).default
        let f = Face(cache, face)
        let key = "replica-read-\(face)-\(loop)-\(UInt32.random(in: 0 ... .max))"
        try await f.set(key, "written")  // a write sent to the replica would be refused (READONLY)
        // Replication is asynchronous: wait (bounded) until the replica has the value.
        var seen: String?
        for _ in 0..<100 where seen == nil {
            seen = try await f.get(key, as: String.self)
            if seen == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(seen == "written")
        let before = try await SentinelServers.getsAnswered(port: replicaPort)
        for _ in 0..<20 { #expect(try await f.get(key, as: String.self) == "written") }
        let after = try await SentinelServers.getsAnswered(port: replicaPort)
        #expect(after - before >= 20, "the replica answered \(after - before) of 20 reads")
        try await f.delete(key)
    }

    @Test func readFromReplicasIsRefusedWhereItCannotApply() throws {
        for (location, words) in [(#""redis://127.0.0.1:1""#, "only for a redis+sentinel:// or redis+cluster:// location"),
                                  (#"["redis://127.0.0.1:1", "redis://127.0.0.1:2"]"#, "reads already go to the ones after the first")] {
            let json = #"{"default": {"BACKEND": "redis", "LOCATION": \#(location), "OPTIONS": {"READ_FROM_REPLICAS": true}}}"#
            do {
                _ = try Caches(json: Data(json.utf8)).default
                Issue.record("READ_FROM_REPLICAS was accepted for \(location)")
            } catch let error as CacheError where error.code == .invalidSetting {
                let (field, reason) = (error.field ?? "", error.reason ?? "")
                #expect(field == "OPTIONS.READ_FROM_REPLICAS")
                #expect(reason.contains(words), Comment(rawValue: reason))
            }
        }
    }

    @Test func malformedSentinelLocationsAreRefused() throws {
        for bad in ["redis+sentinel://127.0.0.1:26379", "redis+sentinel://127.0.0.1:26379/", "redis+sentinel://127.0.0.1:x/svc",
                    "redis+sentinel://127.0.0.1:1,,127.0.0.1:2/svc", "redis+sentinel://127.0.0.1:1/svc/notadb",
                    "redis+sentinel://127.0.0.1:1/svc?ssl_ca_certs=/x.pem"] {
            do {
                _ = try Self.cache(bad)
                Issue.record("\(bad) was accepted")
            } catch let error as CacheError where error.code == .invalidSetting {
                let field = error.field ?? ""
                #expect(field == "LOCATION", "\(bad)")
            }
        }
    }
}

/// Sentinels run with `requirepass`: a primary and a sentinel of the test's own (one sentinel, so
/// that nothing here can start a failover of the shared test servers).
@Suite(.serialized, .enabled(if: TestServers.shouldRun(TestServers.redisURL != nil), Comment(rawValue: TestServers.skipMessage)))
struct RedisSentinelLoginTests {
    /// Connections a sentinel that wants `password` has accepted so far (INFO stats; this asking
    /// connection included).
    static func connectionsReceived(_ sentinel: ServerProcess, password: String) async throws -> Int {
        let stats = try await onPlainThread { () throws -> String in
            let raw = try RawRedis(port: sentinel.port)
            _ = try raw.command(["AUTH", password])
            return try raw.command(["INFO", "stats"])
        }
        guard let m = stats.firstMatch(of: /total_connections_received:(\d+)/), let n = Int(m.1) else {
            throw CheckFailure(message: "no total_connections_received in INFO stats", location: "RedisSentinelLoginTests")
        }
        return n
    }

    /// The failover watcher of a cache whose SENTINEL_PASSWORD every sentinel refuses backs off (500 ms,
    /// then twice as long at each refusal, up to 10 s) instead of logging in again twice a second for
    /// as long as the cache lives. Over 6 s that is at most 4 attempts (12 without the backoff); a slow
    /// machine only makes fewer.
    @Test func aWatcherTheSentinelsRefuseBacksOff() async throws {
        let primary = try await onPlainThread { try ServerProcess(.redis) }
        defer { primary.stop() }
        let sentinel = try await onPlainThread {
            try ServerProcess(.sentinel, extraArguments: ["sentinel monitor guarded 127.0.0.1 \(primary.port) 1", "requirepass s3cret"])
        }
        defer { sentinel.stop() }
        let json = #"{"default": {"BACKEND": "redis", "LOCATION": "redis+sentinel://127.0.0.1:\#(sentinel.port)/guarded", "#
            + #""OPTIONS": {"CONNECT_TIMEOUT": 10, "COMMAND_TIMEOUT": 10, "SENTINEL_PASSWORD": "wrong"}}}"#
        let cache = try Caches(json: Data(json.utf8)).default
        await #expect(throws: CacheError.self) { try await cache.async.set("k", "v") }  // starts the watcher
        let before = try await Self.connectionsReceived(sentinel, password: "s3cret")
        try await Task.sleep(for: .seconds(6))
        let after = try await Self.connectionsReceived(sentinel, password: "s3cret")
        let attempts = after - before - 1  // less the second asking connection
        #expect(attempts <= 6, "the watcher logged in \(attempts) times in 6 s")
        withExtendedLifetime(cache) {}
    }

    @Test(arguments: FaceKind.allCases)
    func sentinelsThatWantAPasswordGetSentinelPassword(_ face: FaceKind) async throws {
        let primary = try await onPlainThread { try ServerProcess(.redis) }
        defer { primary.stop() }
        let sentinel = try await onPlainThread {
            try ServerProcess(.sentinel, extraArguments: ["sentinel monitor guarded 127.0.0.1 \(primary.port) 1", "requirepass s3cret"])
        }
        defer { sentinel.stop() }
        func cache(_ extra: String) throws -> Cache {
            let json = #"{"default": {"BACKEND": "redis", "LOCATION": "redis+sentinel://127.0.0.1:\#(sentinel.port)/guarded", "#
                + #""OPTIONS": {"CONNECT_TIMEOUT": 10, "COMMAND_TIMEOUT": 10\#(extra)}}}"#
            return try Caches(json: Data(json.utf8)).default
        }
        // No password, then a wrong one: a typed login error naming the option; nothing written.
        for extra in ["", #", "SENTINEL_PASSWORD": "wrong""#] {
            do {
                try await Face(cache(extra), face).set("k", "v")
                Issue.record("a write went through sentinels that want a password (options: \(extra))")
            } catch let error as CacheError where error.code == .authenticationFailed {
                let (server, reason) = (error.server ?? "", error.reason ?? "")
                #expect(server.contains("guarded"))
                #expect(reason.contains("SENTINEL_PASSWORD"), Comment(rawValue: reason))
                #expect(!reason.contains("wrong"), "the password is not repeated in the error")
            }
        }
        #expect(try await onPlainThread { try RawRedis(port: primary.port).command(["EXISTS", ":1:k"]) } == ":0")

        let good = try cache(#", "SENTINEL_PASSWORD": "s3cret""#)
        try await Face(good, face).set("k", "v")
        #expect(try await Face(good, face).get("k", as: String.self) == "v")
        #expect(try await onPlainThread { try RawRedis(port: primary.port).command(["GET", ":1:k"]) } == "$v", "the primary the sentinel named holds it")
        // The failover watcher logged in too: its subscription is among the sentinel's clients.
        let subscribed = try await eventuallyAsync(20) {
            let clients = try? await onPlainThread { () throws -> String in
                let raw = try RawRedis(port: sentinel.port)
                _ = try raw.command(["AUTH", "s3cret"])
                return try raw.command(["CLIENT", "LIST"])
            }
            return clients?.contains(" sub=3 ") == true
        }
        #expect(subscribed, "the watcher subscribed to +switch-master, -sdown and +slave on the sentinel that wants a password")
    }

    /// `rediss+sentinel://`: TLS to the sentinels and to the primary they name (a primary and a sentinel
    /// of the test's own, speaking TLS on ports of their own beside the plain ones the start-up check uses).
    @Test(.enabled(if: TestServers.shouldRun(TestServers.tlsDirectory != nil), Comment(rawValue: TestServers.skipMessage)), arguments: FaceKind.allCases)
    func tlsThroughSentinelReachesThePrimaryTheSentinelNames(_ face: FaceKind) async throws {
        let dir = try #require(TestServers.tlsDirectory)
        let primaryTLS = try freeLoopbackPort(), sentinelTLS = try freeLoopbackPort()
        let certificate = ["tls-cert-file \(dir)/server.pem", "tls-key-file \(dir)/server.key", "tls-ca-cert-file \(dir)/ca.pem", "tls-auth-clients no"]
        let primary = try await onPlainThread {
            try ServerProcess(.redis, extraArguments: ["--tls-port", String(primaryTLS)] + certificate.flatMap { line in
                let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
                return ["--" + parts[0], parts[1]]
            })
        }
        defer { primary.stop() }
        // The sentinel watches the primary's TLS port (so that is the address it names) over TLS.
        let sentinel = try await onPlainThread {
            try ServerProcess(.sentinel, extraArguments: ["tls-port \(sentinelTLS)", "tls-replication yes"] + certificate
                              + ["sentinel monitor secured 127.0.0.1 \(primaryTLS) 1"])
        }
        defer { sentinel.stop() }
        let json = #"{"default": {"BACKEND": "redis", "LOCATION": "rediss+sentinel://localhost:\#(sentinelTLS)/secured", "#
            + #""OPTIONS": {"CONNECT_TIMEOUT": 10, "COMMAND_TIMEOUT": 10, "SSL_CA_CERTS": "\#(dir)/ca.pem"}}}"#
        let cache = try Caches(json: Data(json.utf8)).default
        try await Face(cache, face).set("k", "over tls")
        #expect(try await Face(cache, face).get("k", as: String.self) == "over tls")
        #expect(try await onPlainThread { try RawRedis(port: primary.port).command(["GET", ":1:k"]) } == "$over tls",
                "the primary the sentinel named holds it")
        // The same sentinel asked in plain text is refused: the TLS location really spoke TLS to it.
        let plainJSON = #"{"default": {"BACKEND": "redis", "LOCATION": "redis+sentinel://127.0.0.1:\#(sentinelTLS)/secured", "#
            + #""OPTIONS": {"CONNECT_TIMEOUT": 2, "COMMAND_TIMEOUT": 2}}}"#
        await #expect(throws: CacheError.self) { try await Face(try Caches(json: Data(plainJSON.utf8)).default, face).set("k", "plain") }
    }

    @Test func sentinelCredentialsAreRefusedWhereThereAreNoSentinels() throws {
        for (location, options) in [("redis://127.0.0.1:6379", ["SENTINEL_PASSWORD": SettingValue.string("x")]),
                                    ("redis+cluster://127.0.0.1:7000", ["SENTINEL_USERNAME": "u", "SENTINEL_PASSWORD": "x"]),
                                    ("redis+sentinel://127.0.0.1:26379/svc", ["SENTINEL_USERNAME": "u"])] {
            do {
                _ = try Caches(settings: ["default": CacheSettings(backend: "redis", location: [location], options: options)])
                Issue.record("accepted \(options) for \(location)")
            } catch let error as CacheError where error.code == .invalidSetting {
                let field = error.field ?? ""
                #expect(field.hasPrefix("OPTIONS.SENTINEL_"), Comment(rawValue: field))
            }
        }
    }
}

/// A connection to the primary the sentinels name sends nothing but its handshake until `ROLE` has
/// said it is the primary (issue 29): a scripted sentinel names a scripted node that answers ROLE
/// after 150 ms; the SET the test sends at once must reach the node only after that answer, on both
/// faces and loops. (Before, the async face sent it in the handshake's write.)
struct SentinelRoleFirstTests {
    @Test(.timeLimit(.minutes(3)), arguments: FaceKind.allCases, TestLoops.Kind.allCases)
    func commandsWaitForRoleToConfirmThePrimary(_ face: FaceKind, _ loop: TestLoops.Kind) async throws {
        let node = try ScriptedRedis { command, _ in
            switch command.first?.uppercased() ?? "" {
            case "ROLE": return .replyAfter(milliseconds: 150, "*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n")
            default: return .reply("+OK\r\n")
            }
        }
        defer { node.stop() }
        let nodePort = node.port
        let sentinel = try ScriptedRedis { command, _ in
            switch command.first?.uppercased() ?? "" {
            case "SENTINEL": return .reply(ScriptedRedis.array(["127.0.0.1", String(nodePort)]))
            case "SUBSCRIBE":
                return .reply(command.dropFirst().enumerated().map { i, channel in
                    "*3\r\n" + ScriptedRedis.bulk("subscribe") + ScriptedRedis.bulk(channel) + ":\(i + 1)\r\n"
                }.joined())
            default: return .reply("+OK\r\n")
            }
        }
        defer { sentinel.stop() }
        let cache = try RedisSentinelTests.cache("redis+sentinel://127.0.0.1:\(sentinel.port)/svc/0", loop: loop)
        try await Face(cache, face).set("k", "v")
        let log = node.log.filter { $0.contains("ROLE") || $0.contains("SET") }
        let roleAnswered = try #require(log.firstIndex { $0.hasPrefix("sent ROLE") }, "\(log)")
        let setReceived = try #require(log.firstIndex { $0.hasPrefix("recv SET") }, "\(log)")
        #expect(setReceived > roleAnswered, "the SET reached the node before ROLE was answered: \(log)")
    }
}
