import Dispatch
import Foundation
import Logging
import Synchronization
import TandemCache
import TandemTransport
import TandemLoop

/// One command's way through the cluster, shared by both faces: the node to send it to, whether it
/// goes behind `ASKING`, and what a reply asks for next (at most five redirections, `TRYAGAIN` and
/// `CLUSTERDOWN` retried with backoff until the command timeout).
struct ClusterRoute {
    static let maxRedirects = 5
    let cluster: RedisCluster
    private(set) var node: RedisNode
    /// The last redirection was `ASK`: send `ASKING` first, on the same connection.
    private(set) var asking = false
    private var redirects = 0
    private let deadline: UInt64

    init(cluster: RedisCluster, node: RedisNode) {
        self.cluster = cluster
        self.node = node
        deadline = monotonicNanos() &+ UInt64(cluster.settings.commandTimeout * 1e9)
    }

    enum Next {
        /// The reply is the answer (possibly an error the caller maps).
        case done
        /// Send again, to ``node``, now.
        case again
        /// Send again after this many nanoseconds.
        case againAfter(UInt64)
    }

    /// What `reply` asks for; a redirection updates the route (and `MOVED` the slot map).
    mutating func next(after reply: RedisValue) -> Next {
        guard redirects < Self.maxRedirects, let redirect = ClusterRedirect(reply) else { return .done }
        redirects += 1
        cluster.metrics?.redirected(redirect)
        switch redirect {
        case .moved(let slot, let host, let port):
            let host = host ?? node.endpoint.host
            cluster.moved(slot: slot, host: host, port: port)
            node = cluster.node(host: host, port: port)
            asking = false
            return .again
        case .ask(let host, let port):
            node = cluster.node(host: host ?? node.endpoint.host, port: port)
            asking = true
            return .again
        case .tryAgain:
            let now = monotonicNanos()
            guard now < deadline else { return .done }
            return .againAfter(min(UInt64(10_000_000) << min(redirects, 4), deadline - now))
        }
    }
}
