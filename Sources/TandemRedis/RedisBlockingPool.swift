import CHiredis
import Dispatch
import Synchronization
import TandemCache

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

    private func connect() throws -> BlockingRedisConnection {
        let ctx: UnsafeMutablePointer<redisContext>?
        switch endpoint.address {
        case .tcp(let host, let port): ctx = redisConnectWithTimeout(host, Int32(port), RedisBlockingPool.timeval(connectTimeout))
        case .unix(let path): ctx = redisConnectUnixWithTimeout(path, RedisBlockingPool.timeval(connectTimeout))
        }
        guard let ctx else { throw CacheError.connectionFailed(server: endpoint.description, reason: "out of memory") }
        let conn = BlockingRedisConnection(context: ctx)
        if ctx.pointee.err != 0 { throw error(of: conn, operation: "connect") }
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

    /// Borrows a connection (waiting at most `borrowTimeout`), runs `body` on the calling thread, and
    /// returns the connection. A connection found broken is reconnected before use; a command that
    /// fails because an idle pooled connection had been closed by the server is retried once on a
    /// fresh connection.
    func withConnection<R>(operation: String, _ body: (BlockingRedisConnection) throws -> R) throws -> R {
        guard capacity.wait(timeout: .now() + borrowTimeout) == .success else {
            throw CacheError.poolExhausted(server: endpoint.description, size: size)
        }
        defer { capacity.signal() }
        var reused = true
        var conn: BlockingRedisConnection
        if let c = idle.locked({ $0.popLast() }), !c.broken {
            conn = c
        } else {
            conn = try connect()
            reused = false
        }
        while true {
            do {
                let r = try body(conn)
                if !conn.broken { idle.locked { $0.append(conn) } }
                return r
            } catch let e as CacheError {
                // A reused connection that the server closed while it sat idle: retry once, fresh.
                if case .connectionFailed = e, reused, conn.broken {
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
