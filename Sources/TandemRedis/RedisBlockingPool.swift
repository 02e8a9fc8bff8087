import Dispatch
import Synchronization
import TandemCache
import TandemLoop

#if canImport(Glibc)
import Glibc
#endif

/// A bounded pool of blocking connections to one endpoint. The calling thread does the I/O itself:
/// no hop to another thread.
final class RedisBlockingPool: Sendable {
    let endpoint: RedisEndpoint
    let size: Int
    let connectTimeout: Double
    let commandTimeout: Double
    let borrowTimeout: Double
    /// TLS for a `rediss://` endpoint.
    let tls: TLSClientContext?
    private let idle = Mutex<[BlockingRedisConnection]>([])
    private let capacity: DispatchSemaphore

    init(endpoint: RedisEndpoint, tls: TLSClientContext?, size: Int, connectTimeout: Double, commandTimeout: Double, borrowTimeout: Double) {
        self.endpoint = endpoint
        self.tls = tls
        self.size = size
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.borrowTimeout = borrowTimeout
        self.capacity = DispatchSemaphore(value: size)
    }

    /// Connects, logs in and selects the database (on the calling thread: this is the blocking face).
    private func connect() throws -> BlockingRedisConnection {
        let conn = try BlockingRedisConnection(endpoint: endpoint, tls: tls, connectTimeout: connectTimeout, commandTimeout: commandTimeout)
        for command in endpoint.handshake {
            let reply = try conn.run(command, operation: command[0] == "AUTH".bytes ? "AUTH" : "SELECT")
            if case .error(let message) = reply {
                if command[0] == "AUTH".bytes {
                    throw CacheError.authenticationFailed(server: endpoint.description, reason: message)
                }
                throw CacheError.serverError(server: endpoint.description, message: message)
            }
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
        guard capacity.wait(timeout: .now() + borrowTimeout) == .success else {
            throw CacheError.poolExhausted(server: endpoint.description, size: size)
        }
        defer { capacity.signal() }
        var reused = true
        var conn: BlockingRedisConnection
        if let c = idle.locked({ $0.popLast() }), !c.broken, !RedisBlockingPool.closedWhileIdle(c) {
            conn = c
        } else {
            conn = try connect()
            reused = false
        }
        while true {
            do {
                let r = try body(conn)
                if !conn.broken {
                    conn.idleSince = monotonicNanos()
                    idle.locked { $0.append(conn) }
                }
                return r
            } catch let e as CacheError {
                if case .connectionFailed = e, idempotent, reused, conn.broken {
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
        idle.locked { $0.removeAll() }
    }
}
