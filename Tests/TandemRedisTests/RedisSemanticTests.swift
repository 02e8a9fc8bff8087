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

/// Where a Redis deployment other than one plain server is, for the same behaviours.
enum RedisDeployment: String, CaseIterable, CustomStringConvertible, Sendable {
    case tls, sentinel, cluster
    var description: String { rawValue }

    /// The test command's servers for it (nil when they were not started).
    var configured: String? {
        switch self {
        case .tls: return TestServers.redisTLSURL
        case .sentinel: return TestServers.redisSentinels
        case .cluster: return TestServers.redisCluster
        }
    }

    func fixture(_ loop: TestLoops.Kind) -> RedisFixture {
        switch self {
        case .tls: return RedisFixture(tlsOn: loop)
        case .sentinel: return RedisFixture(sentinelOn: loop)
        case .cluster: return RedisFixture(clusterOn: loop)
        }
    }

    /// Each behaviour with each deployment, except "clear" on the cluster: it flushes every primary
    /// of the cluster these behaviours share, so it runs in the fault phase.
    static var cases: [(RedisDeployment, String)] {
        allCases.flatMap { d in SemanticSuite.names.filter { !(d == .cluster && $0 == "clear") }.map { (d, $0) } }
    }
}

private let deploymentsAvailable = TestServers.shouldRun(
    TestServers.redisTLSURL != nil && TestServers.redisSentinels != nil && TestServers.redisCluster != nil)

/// Django's cache behaviours over TLS, through Sentinel and on a six-node cluster, in both faces, on
/// both loops.
@Suite(.enabled(if: deploymentsAvailable, Comment(rawValue: TestServers.skipMessage)))
struct RedisDeploymentSemantics {
    @Test("Redis over TLS, through Sentinel, on a cluster", arguments: RedisDeployment.cases)
    func behaviour(_ deployment: RedisDeployment, _ name: String) async throws {
        _ = try TestServers.need(deployment.configured, "Redis (\(deployment))")
        for loop in TestLoops.Kind.allCases {
            for face in FaceKind.allCases {
                try await SemanticSuite.run(name, fixture: deployment.fixture(loop), face: face)
            }
        }
    }
}
