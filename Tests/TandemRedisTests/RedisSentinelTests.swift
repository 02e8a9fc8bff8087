import Foundation
import Tandem
import TandemTestSupport
import Testing

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
        } catch CacheError.connectionFailed(let server, let reason) {
            #expect(server.contains("no-such-service"))
            #expect(reason.contains("does not know the service"), Comment(rawValue: reason))
        }
    }

    @Test func malformedSentinelLocationsAreRefused() throws {
        for bad in ["redis+sentinel://127.0.0.1:26379", "redis+sentinel://127.0.0.1:26379/", "redis+sentinel://127.0.0.1:x/svc",
                    "redis+sentinel://127.0.0.1:1,,127.0.0.1:2/svc", "redis+sentinel://127.0.0.1:1/svc/notadb",
                    "redis+sentinel://127.0.0.1:1/svc?ssl_ca_certs=/x.pem"] {
            do {
                _ = try Self.cache(bad)
                Issue.record("\(bad) was accepted")
            } catch CacheError.invalidSetting(_, let field, _) {
                #expect(field == "LOCATION", "\(bad)")
            }
        }
    }
}
