import CHiredis
import Dispatch
import Synchronization
import TandemCache
import TandemLoop

#if canImport(Glibc)
import Glibc
#endif

/// One blocking hiredis connection. Its one owner is the pool entry holding it; `deinit` is the one
/// place that frees the context.
final class BlockingRedisConnection: @unchecked Sendable {
    // Why @unchecked Sendable is safe: a hiredis context is not thread-safe, and it is never shared:
    // the pool hands a connection to exactly one borrower at a time (taken out of a Mutex-protected
    // list, put back when the borrower is done), so only one thread ever touches `context` at once.
    let context: UnsafeMutablePointer<redisContext>
    /// Set when the connection may be out of step with the server (I/O error, timeout).
    var broken = false
    /// When the connection was last handed back to the pool (monotonic nanoseconds).
    var idleSince: UInt64 = 0

    init(context: UnsafeMutablePointer<redisContext>) { self.context = context }
    deinit { redisFree(context) }
}

/// A bounded pool of blocking connections to one endpoint. The calling thread does the I/O itself:
/// no hop to another thread.
final class RedisBlockingPool: Sendable {
    let endpoint: RedisEndpoint
    let size: Int
    let connectTimeout: Double
    let commandTimeout: Double
    let borrowTimeout: Double
    private let idle = Mutex<[BlockingRedisConnection]>([])
    private let capacity: DispatchSemaphore

    init(endpoint: RedisEndpoint, size: Int, connectTimeout: Double, commandTimeout: Double, borrowTimeout: Double) {
        self.endpoint = endpoint
        self.size = size
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.borrowTimeout = borrowTimeout
        self.capacity = DispatchSemaphore(value: size)
    }

    private static func timeval(_ seconds: Double) -> Glibc.timeval {
        Glibc.timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1_000_000))
    }

    /// Resolves the endpoint (on the calling thread: this is the blocking face), tries every address
    /// in turn within the connect timeout, and hands the connected socket to a hiredis context.
    private func connect() throws -> BlockingRedisConnection {
        let fd: Int32
        switch blockingConnect(try endpoint.resolveAll(), timeout: connectTimeout) {
        case .success(let s): fd = s
        case .failure(let f):
            if f.timedOut { throw CacheError.timeout(operation: "redis connect", server: endpoint.description) }
            throw CacheError.connectionFailed(server: endpoint.description, reason: f.reason)
        }
        guard let ctx = redisConnectFd(fd) else {
            Glibc.close(fd)
            throw CacheError.connectionFailed(server: endpoint.description, reason: "out of memory")
        }
        // From here the context owns the socket: redisFree (in the connection's deinit) closes it.
        let conn = BlockingRedisConnection(context: ctx)
        _ = redisSetTimeout(ctx, RedisBlockingPool.timeval(commandTimeout))
        _ = redisEnableKeepAlive(ctx)
        for command in endpoint.handshake {
            let reply = try run(conn, command, operation: command[0] == "AUTH".bytes ? "AUTH" : "SELECT")
            if case .error(let message) = reply {
                if command[0] == "AUTH".bytes {
                    throw CacheError.authenticationFailed(server: endpoint.description, reason: message)
                }
                throw CacheError.serverError(server: endpoint.description, message: message)
            }
        }
        return conn
    }

    /// The typed error for a context in the error state.
    func error(of conn: BlockingRedisConnection, operation: String) -> CacheError {
        conn.broken = true
        let c = conn.context.pointee
        let text = withUnsafeBytes(of: c.errstr) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        if c.err == chiredis_err_io && (errno == EAGAIN || errno == EWOULDBLOCK || text.contains("Resource temporarily unavailable")) {
            return .timeout(operation: "redis \(operation)", server: endpoint.description)
        }
        if c.err == chiredis_err_eof {
            return .connectionFailed(server: endpoint.description, reason: "the server closed the connection")
        }
        return .connectionFailed(server: endpoint.description, reason: text.isEmpty ? "error \(c.err)" : text)
    }

    /// Runs one command on `conn`.
    func run(_ conn: BlockingRedisConnection, _ args: [[UInt8]], operation: String) throws -> RedisValue {
        let reply = withRedisArgv(args) { argc, argv, lens in redisCommandArgv(conn.context, argc, argv, lens) }
        guard let reply else { throw error(of: conn, operation: operation) }
        defer { freeReplyObject(reply) }
        return RedisValue(reply: reply)
    }

    /// Sends every command in one write and reads every reply (a pipeline: one round trip).
    func pipeline(_ conn: BlockingRedisConnection, _ commands: [[[UInt8]]], operation: String) throws -> [RedisValue] {
        for c in commands {
            let rc = withRedisArgv(c) { argc, argv, lens in redisAppendCommandArgv(conn.context, argc, argv, lens) }
            if rc != chiredis_ok { throw error(of: conn, operation: operation) }
        }
        var out: [RedisValue] = []
        out.reserveCapacity(commands.count)
        for _ in commands {
            var reply: UnsafeMutableRawPointer?
            if redisGetReply(conn.context, &reply) != chiredis_ok || reply == nil { throw error(of: conn, operation: operation) }
            guard let r = reply else { break }
            out.append(RedisValue(reply: r))
            freeReplyObject(r)
        }
        return out
    }

    /// True when the server has closed a connection that sat idle (a restart, an idle timeout, a
    /// `CLIENT KILL`): it has nothing to read but the end of the stream. Checked only after 100 ms of
    /// idleness, so that a busy caller pays no system call.
    private static func closedWhileIdle(_ conn: BlockingRedisConnection) -> Bool {
        guard monotonicNanos() &- conn.idleSince > 100_000_000 else { return false }
        var byte: UInt8 = 0
        let n = recv(conn.context.pointee.fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
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
