import TandemCache
import TandemTransport
import TandemLoop

#if canImport(Glibc)
import Glibc
#endif

/// One blocking Redis connection: the calling thread does the socket I/O itself (plain TCP, a Unix
/// socket, or TLS through OpenSSL). Commands are RESP written by ``RESP``; hiredis's reader parses
/// the replies, as on the async face. A plain socket is blocking with the command timeout as its
/// receive timeout, so a round trip is one write and one read; TLS waits with `poll` against the
/// command's deadline. Its one owner is the pool
/// entry holding it; `deinit` is the one place that frees the reader, the TLS session and the socket.
final class BlockingRedisConnection: @unchecked Sendable {
    // Why @unchecked Sendable is safe: the pool hands a connection to exactly one borrower at a time
    // (taken out of a Mutex-protected list, put back when the borrower is done), so only one thread
    // ever touches the socket, the session, the reader or the flags at once.
    private let fd: Int32
    private var session: TLSSession?
    private let reader: RedisReplyReader
    private let server: String
    private let commandTimeout: UInt64
    private var input = [UInt8](repeating: 0, count: 16384)
    /// The command in progress has read nothing yet: its first read may block in `recv`.
    private var awaitingFirstRead = false
    /// The socket's receive timeout is set, so a read may block in `recv` (plain sockets only; when
    /// the option cannot be set, every read waits with `poll`).
    private var mayBlockInRecv = false
    /// Set when the connection may be out of step with the server (I/O error, timeout).
    var broken = false
    /// When the connection was last handed back to the pool (monotonic nanoseconds).
    var idleSince: UInt64 = 0
    /// The sentinels' failover epoch when the connection was made (0 without sentinels).
    let epoch: UInt64
    /// For a Sentinel replica reader: whether it fell back to the primary (set by the pool from ROLE).
    var placement = ReplicaPlacement()

    /// Connects to `endpoint` within `connectTimeout` (TCP, then the TLS handshake when `tls` is set).
    convenience init(endpoint: RedisEndpoint, tls: TLSClientContext?, connectTimeout: Double, commandTimeout: Double) throws {
        try self.init(target: RedisTarget(endpoint: endpoint, sentinel: nil), tls: tls, connectTimeout: connectTimeout, commandTimeout: commandTimeout)
    }

    /// Connects to where `target` says now (a sentinel-managed primary is asked for first).
    init(target: RedisTarget, tls: TLSClientContext?, connectTimeout: Double, commandTimeout: Double) throws {
        server = target.endpoint.description
        self.commandTimeout = UInt64(commandTimeout * 1e9)
        epoch = target.sentinel?.epoch ?? 0
        if let sentinel = target.sentinel { placement.connecting(sentinel) }
        let deadline = monotonicNanos() &+ UInt64(connectTimeout * 1e9)
        let found = try target.find()
        switch blockingConnect(found.addresses, timeout: connectTimeout, keepNonBlocking: tls != nil) {
        case .success(let s): fd = s
        case .failure(let f):
            if f.timedOut { throw CacheError.timeout(operation: "redis connect", server: server) }
            throw CacheError.connectionFailed(server: server, reason: f.reason)
        }
        guard let r = RedisReplyReader() else {
            Glibc.close(fd)
            throw CacheError.connectionFailed(server: server, reason: "out of memory")
        }
        reader = r
        // From here deinit closes the socket (and the reader frees itself), also when init throws below.
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
        if tls == nil {
            // The first read of a reply blocks in `recv` for at most the command timeout.
            var limit = timeval(tv_sec: Int(commandTimeout), tv_usec: Int((commandTimeout - commandTimeout.rounded(.down)) * 1e6))
            mayBlockInRecv = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size)) == 0
        }
        if let tls {
            session = try TLSSession(context: tls, fd: fd, host: found.tlsHost)
            do {
                try handshake(deadline: deadline)
            } catch let e as CacheError where e.code == .timeout {
                throw CacheError.tls(server: server, failure: .unanswered)
            }
        }
    }

    deinit {
        session = nil  // SSL_free before the socket it uses is closed
        Glibc.close(fd)
    }

    private func handshake(deadline: UInt64) throws {
        guard let session else { return }
        while true {
            switch session.handshake() {
            case .success(.done): return
            case .success(.wantRead): try wait(for: POLLIN, until: deadline, operation: "connect")
            case .success(.wantWrite): try wait(for: POLLOUT, until: deadline, operation: "connect")
            case .failure(let f):
                broken = true
                throw CacheError.tls(server: server, failure: f)
            }
        }
    }

    /// Runs one command: written in one piece, then its reply read.
    func run(_ args: [[UInt8]], operation: String) throws -> RedisValue {
        let deadline = monotonicNanos() &+ commandTimeout
        awaitingFirstRead = mayBlockInRecv
        do {
            try RESP.command(args).withUnsafeBytes { try send($0, deadline: deadline, operation: operation) }
            return try reply(deadline: deadline, operation: operation)
        } catch {
            broken = true
            throw error
        }
    }

    /// Sends every command in one write and reads every reply (a pipeline: one round trip).
    func pipeline(_ commands: [[[UInt8]]], operation: String) throws -> [RedisValue] {
        let deadline = monotonicNanos() &+ commandTimeout
        awaitingFirstRead = mayBlockInRecv
        do {
            var out: [UInt8] = []
            for c in commands { RESP.append(c, to: &out) }
            try out.withUnsafeBytes { try send($0, deadline: deadline, operation: operation) }
            var replies: [RedisValue] = []
            replies.reserveCapacity(commands.count)
            while replies.count < commands.count { replies.append(try reply(deadline: deadline, operation: operation)) }
            return replies
        } catch {
            broken = true
            throw error
        }
    }

    /// The next reply. A replica that refused a write means the primary has moved (a failover): the
    /// caller gets the reply, and the connection is not reused, so that the next one finds the new
    /// primary.
    private func reply(deadline: UInt64, operation: String) throws -> RedisValue {
        while true {
            switch reader.next() {
            case .reply(let value):
                if RedisTarget.isReadOnly(value) { broken = true }
                return value
            case .incomplete:
                try readMore(deadline: deadline, operation: operation)
            case .protocolError:
                throw CacheError.connectionFailed(server: server, reason: "protocol error")
            }
        }
    }

    /// True when the server has closed the connection while it sat idle (a restart, an idle timeout,
    /// a `CLIENT KILL`): it has nothing to read but the end of the stream.
    var closedWhileIdle: Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        if n < 0 {
            let e = Errno.current
            return !(e.wouldBlock || e.isInterrupted)
        }
        return n == 0 || session == nil
    }

    private func send(_ raw: UnsafeRawBufferPointer, deadline: UInt64, operation: String) throws {
        var sent = 0
        while sent < raw.count {
            let rest = UnsafeRawBufferPointer(rebasing: raw[sent...])
            if let session {
                switch session.write(rest) {
                case .bytes(let n): sent += n
                case .wantWrite: try wait(for: POLLOUT, until: deadline, operation: operation)
                case .wantRead: try wait(for: POLLIN, until: deadline, operation: operation)
                case .closed: throw CacheError.connectionFailed(server: server, reason: "the server closed the connection")
                case .failed(let f): throw f.error(server: server)
                }
                continue
            }
            switch SocketIO.send(fd, rest, dontWait: true) {
            case .bytes(let n): sent += n
            case .wouldBlock: try wait(for: POLLOUT, until: deadline, operation: operation)
            case .closed: throw CacheError.connectionFailed(server: server, reason: "the server closed the connection")
            case .failed(let e): throw CacheError.connectionFailed(server: server, reason: "write failed: \(e)")
            }
        }
    }

    /// Reads what the socket has into the reply reader. The first read of a command blocks in
    /// `recv` (the socket's receive timeout is the command timeout, so it ends by the deadline);
    /// later reads of the same command wait with `poll` for the time that is left.
    private func readMore(deadline: UInt64, operation: String) throws {
        if let session {
            if !session.hasPendingBytes { try wait(for: POLLIN, until: deadline, operation: operation) }
            let r = input.withUnsafeMutableBytes { session.read(into: $0) }
            switch r {
            case .bytes(let n): try feed(n)
            case .wantRead: return
            case .wantWrite: try wait(for: POLLOUT, until: deadline, operation: operation)
            case .closed: throw CacheError.connectionFailed(server: server, reason: "the server closed the connection")
            case .failed(let f): throw f.error(server: server)
            }
            return
        }
        let blocking = awaitingFirstRead
        awaitingFirstRead = false
        switch input.withUnsafeMutableBytes({ SocketIO.receive(fd, into: $0, dontWait: !blocking) }) {
        case .bytes(let n): try feed(n)
        case .closed: throw CacheError.connectionFailed(server: server, reason: "the server closed the connection")
        case .failed(let e): throw CacheError.connectionFailed(server: server, reason: "read failed: \(e)")
        case .wouldBlock:
            if blocking && monotonicNanos() >= deadline { throw CacheError.timeout(operation: "redis \(operation)", server: server) }
            try wait(for: POLLIN, until: deadline, operation: operation)
        }
    }

    private func feed(_ count: Int) throws {
        let ok = input.withUnsafeBytes { reader.feed(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
        if !ok { throw CacheError.connectionFailed(server: server, reason: "protocol error") }
    }

    /// Waits until the socket is ready for `events` (or has failed), or throws a timeout at `deadline`.
    private func wait(for events: Int32, until deadline: UInt64, operation: String) throws {
        switch pollSocket(fd, events: events, until: deadline) {
        case .success(true): return
        case .success(false): throw CacheError.timeout(operation: "redis \(operation)", server: server)
        case .failure(let e): throw CacheError.connectionFailed(server: server, reason: "poll failed: \(e)")
        }
    }
}
