import Foundation
import Tandem

#if canImport(Glibc)
import Glibc
#endif

/// The real servers that `Integration/test.sh` starts on loopback and exports to the tests.
///
/// A bare `swift test` without them skips the server tests (the trait says why); with
/// `TANDEM_REQUIRE_SERVERS=1` a missing server is a failure, never a silent skip.
public enum TestServers {
    static var env: [String: String] { ProcessInfo.processInfo.environment }

    /// True when the test command demands every server.
    public static var required: Bool { env["TANDEM_REQUIRE_SERVERS"] == "1" }

    /// `redis://127.0.0.1:PORT` of the primary.
    public static var redisURL: String? { env["TANDEM_REDIS_URL"] }
    /// `redis://127.0.0.1:PORT` of the replica of the primary.
    public static var redisReplicaURL: String? { env["TANDEM_REDIS_REPLICA_URL"] }
    /// `redis://127.0.0.1:PORT` of a Redis instance reserved for tests that stall or kill connections.
    public static var redisChaosURL: String? { env["TANDEM_REDIS_CHAOS_URL"] }
    /// Port of the Redis instance with `requirepass` and an ACL user.
    public static var redisAuthPort: Int? { env["TANDEM_REDIS_AUTH_PORT"].flatMap(Int.init) }
    /// `rediss://localhost:port` of a redis-server that speaks only TLS (certificate for the name
    /// localhost, from the test CA in ``tlsDirectory``).
    public static var redisTLSURL: String? { env["TANDEM_REDIS_TLS_URL"] }
    /// The same, but the server requires a client certificate (`client.pem` / `client.key`).
    public static var redisMutualTLSURL: String? { env["TANDEM_REDIS_MTLS_URL"] }
    /// `host:port,host:port,host:port` of three sentinels watching a primary and a replica.
    public static var redisSentinels: String? { env["TANDEM_REDIS_SENTINELS"] }
    /// `host:port,...` of a six-node Redis Cluster (three primaries, three replicas).
    public static var redisCluster: String? { env["TANDEM_REDIS_CLUSTER"] }
    /// The service (Sentinel's master name) the sentinels watch.
    public static var redisSentinelService: String { env["TANDEM_REDIS_SENTINEL_SERVICE"] ?? "tandem" }
    /// The test certificates: `ca.pem`, `client.pem`, `client.key`, `other-ca.pem` (a CA that signed nothing used).
    public static var tlsDirectory: String? { env["TANDEM_TLS_DIR"] }
    /// `host:port` of each memcached.
    public static var memcachedServers: [String] {
        (env["TANDEM_MEMCACHED_SERVERS"] ?? "").split(separator: ",").map(String.init)
    }
    /// `host:port` of a memcached that requires SASL (user `tandem`, password `tandem-sasl-pw`).
    public static var memcachedSASL: String? { env["TANDEM_MEMCACHED_SASL"] }
    /// Base URL of the HTTP upstream test server.
    public static var httpUpstream: String? { env["TANDEM_HTTP_UPSTREAM"] }
    /// Base URL of the same upstream over TLS, with a certificate from a private test CA.
    public static var httpsUpstream: String? { env["TANDEM_HTTPS_UPSTREAM"] }
    /// The PEM file of the private test CA.
    public static var httpsCA: String? { env["TANDEM_HTTPS_CA"] }
    /// A Python with Django 5.2 and pymemcache installed (Integration/test.sh installs them).
    public static var djangoPython: String? { env["TANDEM_DJANGO_PYTHON"] }

    /// Whether tests needing `what` should run: the servers are there, or they are required (and a
    /// missing one then fails the test).
    public static func shouldRun(_ available: Bool) -> Bool { available || required }

    /// The message a skipped server test shows.
    public static let skipMessage = "servers not started: run Integration/test.sh (it starts redis-server, memcached and the HTTP upstream)"

    /// Returns `value`, or throws a failure naming the missing server.
    public static func need<T>(_ value: T?, _ what: String) throws -> T {
        guard let value else {
            throw CheckFailure(message: "\(what) is not configured (TANDEM_REQUIRE_SERVERS=1): \(skipMessage)", location: "TestServers")
        }
        return value
    }

    /// Splits `host:port` or `scheme://host:port[/...]`.
    public static func hostPort(_ address: String) -> (String, Int)? {
        var a = Substring(address)
        if let r = a.range(of: "://") { a = a[r.upperBound...] }
        if let slash = a.firstIndex(of: "/") { a = a[..<slash] }
        if let at = a.lastIndex(of: "@") { a = a[a.index(after: at)...] }
        guard let colon = a.lastIndex(of: ":"), let port = Int(a[a.index(after: colon)...]) else { return nil }
        return (String(a[..<colon]), port)
    }
}

/// A blocking TCP connection to `host:port` (IPv4), with a receive timeout if given. The caller closes it.
public func connectTCP(host: String = "127.0.0.1", port: Int, receiveTimeout: Double? = nil) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw CheckFailure(message: "socket() failed", location: "connectTCP") }
    if let t = receiveTimeout {
        var tv = timeval(tv_sec: Int(t), tv_usec: Int((t - Double(Int(t))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    inet_pton(AF_INET, host, &addr.sin_addr)
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard rc == 0 else {
        let e = errno
        close(fd)
        throw CheckFailure(message: "connect to \(host):\(port) failed (errno \(e))", location: "connectTCP")
    }
    return fd
}

/// The TCP connections to `port` on this machine that are open (ESTABLISHED) on the client side, read
/// from `/proc/net/tcp` and `/proc/net/tcp6`. A socket its client closed leaves that state at once,
/// unlike a server's own connection count, which moves only when the server gets round to the close.
/// Count only what this process alone connects to (a server a test started for itself).
public func openClientConnections(toPort port: Int) throws -> Int {
    // An established socket whose remote port is `port` is either a client of that server, or the
    // accepting side of some other server's connection whose client happened to get `port` as its
    // ephemeral port (servers here listen on ports from the same range). The second kind sits on a
    // listening port, a client never does: count only sockets whose local port nobody listens on.
    var established: [(local: Int, remote: Int)] = []
    var listening = Set<Int>()
    func portOf(_ field: Substring) -> Int? {
        guard let colon = field.lastIndex(of: ":") else { return nil }
        return Int(field[field.index(after: colon)...], radix: 16)
    }
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        // Read to the end: procfs files report size 0, and a sized read stops after the first page.
        guard let data = try? FileHandle(forReadingFrom: URL(fileURLWithPath: table)).readToEnd() else { continue }
        let text = String(decoding: data, as: UTF8.self)
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 3, let local = portOf(fields[1]), let remote = portOf(fields[2]) else { continue }
            switch fields[3] {
            case "0A": listening.insert(local)
            case "01": established.append((local, remote))
            default: break
            }
        }
    }
    return established.filter { $0.remote == port && !listening.contains($0.local) }.count
}

/// Sends `request` to a TCP server and reads until `until` is satisfied or `timeout` passes: for
/// talking to servers directly in tests (checking what a client stored, or sending admin commands).
/// The default bound is long (30 s): an answer normally comes at once, but a sanitizer phase running
/// the whole suite against the same servers once kept a Redis SET waiting past 3 s. Probes that
/// expect no answer pass a short `timeout` of their own.
public func rawExchange(host: String = "127.0.0.1", port: Int, _ request: [UInt8], timeout: Double = 30,
                        until done: ([UInt8]) -> Bool) throws -> [UInt8] {
    let fd = try connectTCP(host: host, port: port, receiveTimeout: timeout)
    defer { close(fd) }
    var sent = 0
    while sent < request.count {
        let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw CheckFailure(message: "send failed", location: "rawExchange") }
        sent += n
    }
    var reply: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while !done(reply) {
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        reply += buf[0..<n]
    }
    return reply
}

/// Waits until the Redis server on `port` stops answering PING within 200 ms (it is stalled, say by
/// `DEBUG SLEEP` from another connection). Returns false if it kept answering for `seconds`.
public func waitUntilRedisStalls(port: Int, seconds: Double = 5) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        let reply = (try? rawExchange(port: port, Array("PING\r\n".utf8), timeout: 0.2) { $0.last == 10 }) ?? []
        if reply.last != 10 { return true }
        Thread.sleep(forTimeInterval: 0.01)
    }
    return false
}

/// Sends one Redis command (RESP, binary-safe) and returns the raw reply.
public func redisCommand(port: Int, _ args: [String], password: String? = nil) throws -> String {
    func resp(_ a: [String]) -> [UInt8] { RESPCommand.encode(a) }
    var req: [UInt8] = []
    var replies = 1
    if let password {
        req += resp(["AUTH", password])
        replies += 1
    }
    req += resp(args)
    let reply = try rawExchange(port: port, req) { bytes in
        // Good enough for tests: count CRLF-terminated top-level lines of simple replies, or wait for a bulk body.
        guard let s = String(validating: bytes, as: UTF8.self) else { return false }
        let lines = s.components(separatedBy: "\r\n").dropLast()
        var need = replies
        var i = lines.startIndex
        while i < lines.endIndex && need > 0 {
            let line = lines[i]
            if line.hasPrefix("$"), let n = Int(line.dropFirst()), n >= 0 { i += 2 } else { i += 1 }
            need -= 1
        }
        return need == 0 && i <= lines.endIndex
    }
    let text = String(decoding: reply, as: UTF8.self)
    if password != nil, let r = text.range(of: "\r\n") { return String(text[r.upperBound...]) }
    return text
}

/// Requests the HTTP client must refuse before any I/O: no host, a scheme other than http(s), CR/LF in
/// the URL. (A bad method or field name cannot be made: swift-http-types' initialisers return nil.)
public func badHTTPRequests(base: String) -> [UpstreamRequest] {
    [
        UpstreamRequest(.get, "not a url"),
        UpstreamRequest(.get, "ftp://127.0.0.1/file"),
        UpstreamRequest(.get, "http://"),
        UpstreamRequest(.get, base + "/x\r\nX-Injected: 1"),
    ]
}

/// Header fields from name-value pairs (test literals; a name that is not a valid field name traps).
public func fields(_ pairs: KeyValuePairs<String, String>) -> HTTPFields {
    var out = HTTPFields()
    for (name, value) in pairs {
        guard let n = HTTPField.Name(name) else { preconditionFailure("not a field name: \(name.debugDescription)") }
        out.append(HTTPField(name: n, value: value))
    }
    return out
}
