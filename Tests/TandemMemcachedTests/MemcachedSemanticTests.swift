import Tandem
import TandemTestSupport
import Testing

private let serversAvailable = TestServers.shouldRun(!TestServers.memcachedServers.isEmpty)

/// Django's cache behaviours against three real memcached servers, in both faces, on both loops.
@Suite(.enabled(if: serversAvailable, Comment(rawValue: TestServers.skipMessage)))
struct MemcachedSemantics {
    @Test("memcached", arguments: SemanticSuite.names, TestLoops.Kind.allCases)
    func behaviour(_ name: String, _ loop: TestLoops.Kind) async throws {
        let servers = TestServers.memcachedServers
        #expect(servers.count == 3, "the test command starts three memcached servers")
        // flush_all would hit every concurrent behaviour: "clear" gets a server of its own.
        let own = name == "clear" ? try await onPlainThread { try MemcachedProcess() } : nil
        defer { own?.stop() }
        for face in FaceKind.allCases {
            try await SemanticSuite.run(name, fixture: MemcachedFixture(isolatedServer: own?.address, loop: loop), face: face)
        }
    }
}
