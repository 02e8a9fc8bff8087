import Tandem
import TandemTestSupport
import Testing

private let serversAvailable = TestServers.shouldRun(TestServers.redisURL != nil)

/// Django's cache behaviours against a real redis-server, in both faces, on both loops.
@Suite(.enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)))
struct RedisSemantics {
    @Test("Redis", arguments: SemanticSuite.names, TestLoops.Kind.allCases)
    func behaviour(_ name: String, _ loop: TestLoops.Kind) async throws {
        _ = try TestServers.need(TestServers.redisURL, "redis-server")
        for face in FaceKind.allCases {
            try await SemanticSuite.run(name, fixture: RedisFixture(loop: loop), face: face)
        }
    }
}
