import Dispatch
import Synchronization
import TandemCache
import TandemTransport
import TandemLoop

#if canImport(Glibc)
import Glibc
#endif

/// A bounded pool of blocking connections to one endpoint. The calling thread does the I/O itself:
/// no hop to another thread.
final class RedisBlockingPool: Sendable {
    let target: RedisTarget
    var endpoint: RedisEndpoint { target.endpoint }
    let size: Int
    let connectTimeout: Double
    let commandTimeout: Double
    let borrowTimeout: Double
    /// TLS for a `rediss://` endpoint.
    let tls: TLSClientContext?
    private let idle = Mutex<[BlockingRedisConnection]>([])
    private let capacity: PoolPermits
    private let metrics: ConnectionMetrics?

    init(target: RedisTarget, tls: TLSClientContext?, size: Int, connectTimeout: Double, commandTimeout: Double, borrowTimeout: Double,
         metrics: ConnectionMetrics? = nil) {
        self.target = target
        self.metrics = metrics
        self.tls = tls
        self.size = size
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.borrowTimeout = borrowTimeout
        self.capacity = PoolPermits(count: size)
    }

    /// True for a connection made before the sentinels announced a failover (it may still talk to
    /// the old primary, whose writes the failover throws away), or a replica reader that fell back to
    /// the primary and should ask the sentinels again (``ReplicaPlacement``).
    private func isStale(_ conn: BlockingRedisConnection) -> Bool {
        guard let sentinel = target.sentinel else { return false }
        return conn.epoch != sentinel.epoch || (target.readsReplica && conn.placement.shouldMove(sentinel))
    }

    /// ``makeConnection()``, timed and its failure counted when metrics are on.
    private func connect() throws -> BlockingRedisConnection {
        guard let metrics else { return try makeConnection() }
        let start = monotonicNanos()
        do {
            let conn = try makeConnection()
            metrics.createTime.recordNanoseconds(ConnectionMetrics.since(start, monotonicNanos()))
            return conn
        } catch {
            metrics.failed(error)
            throw error
        }
    }

    /// Connects, logs in and selects the database (on the calling thread: this is the blocking face).
    private func makeConnection() throws -> BlockingRedisConnection {
        let conn = try BlockingRedisConnection(target: target, tls: tls, connectTimeout: connectTimeout, commandTimeout: commandTimeout)
        for command in target.handshake {
            let reply = try conn.run(command, operation: String(decoding: command[0], as: UTF8.self))
            if target.readsReplica, command[0] == "ROLE".bytes { conn.placement.learned(role: reply) }
            if let refusal = target.refusal(of: command, reply: reply) { throw refusal }
        }
        return conn
    }

    /// True when the server has closed a connection that sat idle (a restart, an idle timeout, a
    /// `CLIENT KILL`): it has nothing to read but the end of the stream. Checked only after 100 ms of
    /// idleness, so that a busy caller pays no system call.
    private static func closedWhileIdle(_ conn: BlockingRedisConnection) -> Bool {
        guard monotonicNanos() &- conn.idleSince > 100_000_000 else { return false }
        return conn.closedWhileIdle
    }

    /// Borrows a connection (waiting at most `borrowTimeout`), runs `body` on the calling thread, and
    /// returns the connection. A pooled connection found broken, or closed by the server while it sat
    /// idle, is replaced before use.
    ///
    /// - Parameter idempotent: the command may safely run twice. Only such a command is retried (once,
    ///   on a fresh connection) when a reused connection fails: a lost reply does not say whether the
    ///   server ran the command, and running `INCR` or `SET NX` twice would corrupt the answer.
    func withConnection<R>(operation: String, idempotent: Bool, _ body: (BlockingRedisConnection) throws -> R) throws -> R {
        let waitStart = metrics == nil ? 0 : monotonicNanos()
        guard capacity.take(waitingAtMost: borrowTimeout) else {
            metrics?.timeouts.increment()
            throw CacheError.poolExhausted(server: endpoint.description, size: size)
        }
        defer { capacity.giveBack() }
        metrics?.lent(waitingSince: waitStart)
        defer { metrics?.used.decrement() }
        var reused = true
        var conn: BlockingRedisConnection
        let pooled = idle.locked({ $0.popLast() })
        if pooled != nil { metrics?.idle.decrement() }
        if let c = pooled, !c.broken, !isStale(c), !RedisBlockingPool.closedWhileIdle(c) {
            conn = c
        } else {
            conn = try connect()
            reused = false
        }
        while true {
            do {
                let r = try body(conn)
                if !conn.broken && !isStale(conn) {
                    conn.idleSince = monotonicNanos()
                    idle.locked { $0.append(conn) }
                    metrics?.idle.increment()
                }
                return r
            } catch let e as CacheError {
                if conn.broken { metrics?.failed(e) }
                if e.code == .connectionFailed, idempotent, reused, conn.broken {
                    reused = false
                    conn = try connect()
                    continue
                }
                throw e
            }
        }
    }

    /// Frees every idle connection (borrowed ones are freed when returned broken or at pool teardown).
    func close() {
        let n = idle.locked { list in
            defer { list.removeAll() }
            return list.count
        }
        if n > 0 { metrics?.idle.decrement(by: Double(n)) }
    }
}
