import Logging
import Synchronization
import TandemCache
import TandemTransport
import TandemLoop

/// Where a node's connections go: a fixed server, or the primary the sentinels name at each connect.
struct RedisTarget: Sendable {
    let endpoint: RedisEndpoint
    let sentinel: RedisSentinel?
    /// Connections for reads only, to a replica the sentinels list (or the primary when they list
    /// none healthy). Such a connection takes any role: a read is right on either.
    var readsReplica = false
    /// A connection to a cluster replica for reads: it sends `READONLY` after the handshake, so
    /// that the replica answers reads of its primary's slots instead of redirecting them.
    var clusterReplica = false

    /// True when the server can change under the connections (a sentinel-managed primary): they
    /// check its role when they connect and reconnect when it answers `READONLY`.
    var followsFailover: Bool { sentinel != nil }

    /// The addresses to connect to and the name TLS checks (blocks: a name lookup, the sentinels).
    func find() throws(CacheError) -> (addresses: [ResolvedAddress], tlsHost: String) {
        guard let sentinel else { return (try endpoint.resolveAll(), endpoint.tlsHost) }
        let (host, port) = try readsReplica ? sentinel.replica() : sentinel.primary()
        return (try ServerAddress.tcp(host: host, port: port).resolveAll(description: endpoint.description), host)
    }

    /// The commands that prepare a new connection: AUTH and SELECT as needed, ROLE when the server
    /// must be a primary (or, for a replica reader, to learn whether it fell back to the primary),
    /// READONLY for a cluster replica that serves reads.
    var handshake: [[[UInt8]]] {
        endpoint.handshake + (followsFailover ? [["ROLE".bytes]] : []) + (clusterReplica ? [["READONLY".bytes]] : [])
    }

    /// True for a ROLE reply from a primary.
    static func isPrimaryRole(_ reply: RedisValue) -> Bool {
        guard case .array(let items) = reply, case .bulk(let role)? = items.first else { return false }
        return role == "master".bytes
    }

    /// Why a reply to a handshake command means the connection is unusable (nil: it is fine).
    func refusal(of command: [[UInt8]], reply: RedisValue) -> CacheError? {
        if case .error(let message) = reply {
            return command[0] == "AUTH".bytes
                ? .authenticationFailed(server: endpoint.description, reason: message)
                : .serverError(server: endpoint.description, message: message)
        }
        if command[0] == "ROLE".bytes, !readsReplica {
            guard Self.isPrimaryRole(reply) else {
                return .connectionFailed(server: endpoint.description, reason: "the server the sentinels named is not a primary (a failover under way?)")
            }
        }
        return nil
    }

    /// True for the reply a replica gives to a write: the primary has changed.
    static func isReadOnly(_ reply: RedisValue) -> Bool {
        if case .error(let message) = reply { return message.hasPrefix("READONLY") }
        return false
    }
}
