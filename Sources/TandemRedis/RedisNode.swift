import Logging
import Synchronization
import TandemCache
import TandemTransport
import TandemLoop

#if canImport(Glibc)
import Glibc
#endif

/// One Redis server: a blocking pool and the async connection(s) on the loop.
final class RedisNode: Sendable {
    let endpoint: RedisEndpoint
    let pool: RedisBlockingPool
    let connections: [RedisAsyncConnection]
    /// Serves reads only (a cluster replica behind `READONLY`): never given a write.
    let readsOnly: Bool
    private let picker: LoopPicker
    /// When a fallback from this (read-only) node was last logged, in monotonic nanoseconds.
    private let fallbackLoggedAt = Atomic<UInt64>(0)

    init(endpoint: RedisEndpoint, pool: RedisBlockingPool, connections: [RedisAsyncConnection], readsOnly: Bool = false) {
        self.endpoint = endpoint
        self.pool = pool
        self.connections = connections
        self.readsOnly = readsOnly
        picker = LoopPicker(connections.map(\.loop))
    }

    /// The async connection for the next command: one on the caller's loop when the caller runs on a
    /// loop that has one, else on the loop the calling thread was given; several there in turn (see ``LoopPicker``).
    var connection: RedisAsyncConnection { connections[picker.index()] }

    /// True at most once every 10 s per node: whether to log that a read left this node (a dead
    /// replica would otherwise log once per read).
    func shouldLogFallback() -> Bool {
        let now = monotonicNanos()
        let last = fallbackLoggedAt.load(ordering: .relaxed)
        guard last == 0 || now &- last >= 10_000_000_000 else { return false }
        return fallbackLoggedAt.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged
    }
}
