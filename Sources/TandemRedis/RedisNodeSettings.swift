import CoreMetrics
import Dispatch
import Foundation
import Logging
import Synchronization
import TandemCache
import TandemTransport
import TandemLoop

/// How a node is built: the settings every node of a backend shares.
struct RedisNodeSettings: Sendable {
    /// The loops a node's async connections are spread over (connection i on loop i mod count).
    let loops: [any TandemEventLoop]
    let connectTimeout: Double
    let commandTimeout: Double
    let poolSize: Int
    let poolTimeout: Double
    let asyncConnections: Int
    /// Where the nodes' connection metrics go (nil: the bootstrapped factory); see ``TandemCache/ConnectionMetrics``.
    var metricsFactory: (any MetricsFactory)? = nil

    /// - Parameter onConnectionLost: told whenever one of the node's async connections closes.
    func makeNode(_ target: RedisTarget, tls: TLSClientContext?, onConnectionLost: (@Sendable () -> Void)? = nil) -> RedisNode {
        let name = target.readsReplica || target.clusterReplica ? "\(target.endpoint.description) (replica)" : target.endpoint.description
        let pool = RedisBlockingPool(target: target, tls: tls, size: poolSize, connectTimeout: connectTimeout,
                                     commandTimeout: commandTimeout, borrowTimeout: poolTimeout,
                                     metrics: ConnectionMetrics.make(system: "redis", pool: name, face: "blocking", factory: metricsFactory))
        let asyncMetrics = ConnectionMetrics.make(system: "redis", pool: name, face: "async", pipelined: true, factory: metricsFactory)
        let conns = (0..<asyncConnections).map { i in
            RedisAsyncConnection(loop: loops[i % loops.count], target: target, tls: tls, commandTimeout: commandTimeout, connectTimeout: connectTimeout,
                                 metrics: asyncMetrics, onConnectionLost: onConnectionLost)
        }
        return RedisNode(endpoint: target.endpoint, pool: pool, connections: conns, readsOnly: target.clusterReplica)
    }
}
