import Tandem
import TandemTestSupport
import Testing

/// The test command starts real servers; these tests prove they are there and answering, so that
/// every server test after them talks to a real process.
@Suite(.enabled(if: TestServers.shouldRun(TestServers.redisURL != nil), Comment(rawValue: TestServers.skipMessage)))
struct ServersTests {
    @Test func redisPrimaryAndReplicaAnswer() async throws {
        let primary = try #require(TestServers.hostPort(try TestServers.need(TestServers.redisURL, "redis primary")))
        #expect(try await onPlainThread { try redisCommand(port: primary.1, ["PING"]) }.hasPrefix("+PONG"))
        let replica = try #require(TestServers.hostPort(try TestServers.need(TestServers.redisReplicaURL, "redis replica")))
        #expect(try await onPlainThread { try redisCommand(port: replica.1, ["ROLE"]) }.contains("slave"))
    }

    @Test func redisAuthInstanceRefusesWithoutPassword() async throws {
        let port = try TestServers.need(TestServers.redisAuthPort, "redis auth instance")
        #expect(try await onPlainThread { try redisCommand(port: port, ["PING"]) }.hasPrefix("-NOAUTH"))
        #expect(try await onPlainThread { try redisCommand(port: port, ["PING"], password: "tandem-secret") }.hasPrefix("+PONG"))
    }

    @Test func threeMemcachedServersAnswer() async throws {
        let servers = TestServers.memcachedServers
        #expect(servers.count == 3)
        for s in servers {
            let (host, port) = try #require(TestServers.hostPort(s))
            let reply = try await onPlainThread { try rawExchange(host: host, port: port, Array("version\r\n".utf8)) { $0.last == 10 } }
            #expect(String(decoding: reply, as: UTF8.self).hasPrefix("VERSION 1."))
        }
    }
}
