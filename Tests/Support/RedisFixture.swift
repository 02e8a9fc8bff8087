import Foundation
import Synchronization
import Tandem

/// Loops shared by the server tests (one of each kind for the whole test process).
public enum TestLoops {
    public static let epoll = EpollEventLoop(name: "test-shared-epoll")
    public static let dispatch = DispatchEventLoop(name: "test-shared-dispatch")

    public enum Kind: String, Sendable, CaseIterable, CustomStringConvertible {
        case epoll, dispatch
        public var description: String { rawValue }
        public var loop: any TandemEventLoop { self == .epoll ? TestLoops.epoll : TestLoops.dispatch }
        /// A new loop of this kind for one test alone: load tests use one, so that their flood of work
        /// does not delay the other tests sharing `loop` past their timeouts. Shut it down afterwards.
        public func makePrivateLoop(_ name: String) -> any TandemEventLoop {
            self == .epoll ? EpollEventLoop(name: name) : DispatchEventLoop(name: name)
        }
    }
}

private let nextRedisDB = Atomic<Int>(1)

/// Redis on the test server, each fixture in a database of its own (the test server runs with
/// `--databases 4096`), so that `clear()` (FLUSHDB) in one behaviour cannot touch another running at
/// the same time.
public struct RedisFixture: CacheFixture {
    public let db: Int
    public let loop: any TandemEventLoop
    public let options: [String: SettingValue]

    public let server: String
    /// Put in front of every key made (through the key function) when the fixture shares a server
    /// without databases (a cluster); "" otherwise.
    public var namespace = ""

    /// - Parameter chaos: use the instance reserved for tests that stall or kill connections.
    /// - Parameter loop: the loop the cache runs on (the shared loop of that kind unless `on` is given).
    /// - Parameter on: a loop of the test's own.
    /// The default command timeout is generous (10 s): these tests are about results, and the whole
    /// test process shares two cores and two loops with load tests and sanitizers.
    public init(loop: TestLoops.Kind, on own: (any TandemEventLoop)? = nil,
                options: [String: SettingValue] = ["COMMAND_TIMEOUT": 10], chaos: Bool = false) {
        db = nextRedisDB.add(1, ordering: .relaxed).newValue % 4000 + 50
        self.loop = own ?? loop.loop
        self.options = options
        server = (chaos ? TestServers.redisChaosURL : TestServers.redisURL) ?? "redis://127.0.0.1:1"
    }

    /// Redis through the test sentinels: the primary of their service, asked for at every connect.
    public init(sentinelOn loop: TestLoops.Kind) {
        db = nextRedisDB.add(1, ordering: .relaxed).newValue % 4000 + 50
        self.loop = loop.loop
        options = ["COMMAND_TIMEOUT": 10, "CONNECT_TIMEOUT": 10]  // the connect asks the sentinels first
        server = "redis+sentinel://\(TestServers.redisSentinels ?? "127.0.0.1:1")/\(TestServers.redisSentinelService)"
    }

    /// Redis Cluster (the test command's six nodes), each fixture in a key namespace of its own (a
    /// cluster has one database). The "clear" behaviour flushes every primary: it runs in the fault
    /// phase, not among the concurrent behaviours.
    public init(clusterOn loop: TestLoops.Kind) {
        db = nextRedisDB.add(1, ordering: .relaxed).newValue
        self.loop = loop.loop
        options = ["COMMAND_TIMEOUT": 10, "CONNECT_TIMEOUT": 10]
        server = "redis+cluster://\(TestServers.redisCluster ?? "127.0.0.1:1")"
        namespace = "c\(db)-"
    }

    /// Redis over TLS (the test server that takes any client), trusting the test CA.
    public init(tlsOn loop: TestLoops.Kind) {
        db = nextRedisDB.add(1, ordering: .relaxed).newValue % 4000 + 50
        self.loop = loop.loop
        // A generous connect timeout too: it covers the handshake, which the one-threaded TLS server
        // does for every new connection of every behaviour running at once (seconds, under sanitizers).
        options = ["COMMAND_TIMEOUT": 10, "CONNECT_TIMEOUT": 10, "SSL_CA_CERTS": .string((TestServers.tlsDirectory ?? "/nonexistent") + "/ca.pem")]
        server = TestServers.redisTLSURL ?? "rediss://localhost:1"
    }

    public var url: String { namespace.isEmpty ? "\(server)/\(db)" : server }
    public var keyNamespace: String { namespace }
    public var port: Int { TestServers.hostPort(server)?.1 ?? 1 }
    public var stores: Bool { true }
    public var culls: Bool { false }
    public var strictKeys: Bool { false }

    public func makeCache(_ configure: (inout CacheSettings) -> Void) throws -> Cache {
        var s = CacheSettings(backend: "redis", location: [url], options: options)
        configure(&s)
        if !namespace.isEmpty {
            let inner = s.keyFunction
            let ns = namespace
            s.keyFunction = { key, prefix, version in ns + (inner?(key, prefix, version) ?? "\(prefix):\(version):\(key)") }
        }
        return try BackendRegistry.standard.makeCache(alias: "redis-test", settings: s, loop: loop)
    }

    public func passTime(_ seconds: Double) async throws {
        try await Task.sleep(for: .milliseconds(Int(seconds * 1000) + 20))
    }

    /// A raw command on this fixture's database, on a fresh test connection (on a plain thread: test
    /// helpers must not block the two cooperative threads everything else needs).
    public func raw(_ args: [String]) async throws -> String {
        let (port, db) = (port, db)
        return try await onPlainThread {
            let r = try RawRedis(port: port)
            _ = try r.command(["SELECT", String(db)])
            return try r.command(args)
        }
    }
}

/// A minimal blocking RESP client over one socket, for tests (SELECT sticks across commands).
public final class RawRedis: @unchecked Sendable {
    // Why @unchecked Sendable is safe: every use goes through `lock`.
    private let lock = NSLock()
    private let fd: Int32
    public init(port: Int) throws {
        fd = try connectTCP(port: port)
    }

    deinit { close(fd) }

    /// Sends one command and returns the reply with bulk bodies inlined: `+OK`, `:1`, `$hello`, `$nil`, `*2 ...`.
    public func command(_ args: [String]) throws -> String {
        lock.lock()
        defer { lock.unlock() }
        let req = RESPCommand.encode(args)
        _ = req.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        return try readReply()
    }

    private var buffer: [UInt8] = []

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw CheckFailure(message: "redis closed the test connection", location: "RawRedis") }
        buffer += chunk[0..<n]
    }

    private func line() throws -> String {
        while true {
            if let i = buffer.firstIndex(of: 10), i > 0, buffer[i - 1] == 13 {
                let l = String(decoding: buffer[0..<(i - 1)], as: UTF8.self)
                buffer.removeFirst(i + 1)
                return l
            }
            try fill()
        }
    }

    private func readReply() throws -> String {
        let l = try line()
        guard let t = l.first else { return "" }
        switch t {
        case "$":
            let n = Int(l.dropFirst()) ?? -1
            if n < 0 { return "$nil" }
            while buffer.count < n + 2 { try fill() }
            let body = String(decoding: buffer[0..<n], as: UTF8.self)
            buffer.removeFirst(n + 2)
            return "$" + body
        case "*":
            let n = Int(l.dropFirst()) ?? -1
            if n < 0 { return "*nil" }
            var parts: [String] = []
            for _ in 0..<n { parts.append(try readReply()) }
            return "*\(n) " + parts.joined(separator: " ")
        default:
            return l
        }
    }
}

/// The Redis Cluster slot of `key`: CRC16/XMODEM of the key (or of its hash tag, the text between the
/// first `{` and the next `}` when not empty) modulo 16384, written here from the cluster
/// specification so that tests do not check Tandem's function against itself.
public func clusterKeySlot(_ key: String) -> Int {
    var bytes = Array(key.utf8)
    if let open = bytes.firstIndex(of: 123), let close = bytes[(open + 1)...].firstIndex(of: 125), close > open + 1 {
        bytes = Array(bytes[(open + 1)..<close])
    }
    var crc: UInt16 = 0
    for b in bytes {
        crc ^= UInt16(b) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
    }
    return Int(crc % 16384)
}

/// The test command's sentinels and the servers they watch, as tests see them.
public enum SentinelServers {
    /// The port of the first sentinel.
    public static func firstSentinelPort() throws -> Int {
        let sentinels = try TestServers.need(TestServers.redisSentinels, "redis sentinels")
        guard let port = TestServers.hostPort(String(sentinels.split(separator: ",")[0]))?.1 else {
            throw CheckFailure(message: "no port in \(sentinels)", location: "SentinelServers")
        }
        return port
    }

    /// The replica the sentinels watch, once they list it healthy (not down, its link to the primary
    /// up; waits at most `seconds`): its port.
    public static func healthyReplicaPort(within seconds: Int = 15) async throws -> Int {
        let sentinelPort = try firstSentinelPort()
        let service = TestServers.redisSentinelService
        for _ in 0..<(seconds * 10) {
            let listed = try await onPlainThread { try RawRedis(port: sentinelPort).command(["SENTINEL", "replicas", service]) }
            if listed.contains("$master-link-status $ok"), !listed.contains("s_down"),
               let m = listed.firstMatch(of: /\$port \$(\d+)/), let port = Int(m.1) {
                return port
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw CheckFailure(message: "the sentinels did not list a healthy replica within \(seconds) s", location: "SentinelServers")
    }

    /// True once the sentinels hold the replica on `port` subjectively down.
    public static func replicaIsDown(port: Int) async throws -> Bool {
        let sentinelPort = try firstSentinelPort()
        let listed = try await onPlainThread {
            try RawRedis(port: sentinelPort).command(["SENTINEL", "replicas", TestServers.redisSentinelService])
        }
        return listed.contains("s_down") && listed.contains("$port $\(port)")
    }

    /// How many GETs a Redis server has answered (INFO commandstats).
    public static func getsAnswered(port: Int) async throws -> Int {
        let info = try await onPlainThread { try RawRedis(port: port).command(["INFO", "commandstats"]) }
        guard let m = info.firstMatch(of: /cmdstat_get:calls=(\d+)/) else { return 0 }
        return Int(m.1) ?? 0
    }
}

/// A daemonized `redis-server` the test command started (Integration/lib.sh `start_redis`), as it
/// reports its own settings: a test can kill it and start it again on the same port, with the same
/// files (a cluster node keeps its identity through its nodes file).
public struct RedisDaemon: Sendable {
    /// The settings read back with CONFIG GET.
    private let settings: [String: String]
    public let port: Int
    /// The process id when it was read.
    public let pid: Int32

    /// Reads the settings of the server on `port`.
    public init(port: Int) throws {
        self.port = port
        let raw = try RawRedis(port: port)
        var found: [String: String] = [:]
        for name in ["dir", "pidfile", "logfile", "dbfilename", "cluster-enabled", "cluster-port", "cluster-config-file",
                     "cluster-node-timeout", "databases"] {
            // "*2 $name $value" (values here hold no spaces)
            let parts = try raw.command(["CONFIG", "GET", name]).split(separator: " ")
            if parts.count == 3 { found[name] = String(parts[2].dropFirst()) }
        }
        settings = found
        let info = try raw.command(["INFO", "server"])
        guard let m = info.firstMatch(of: /process_id:(\d+)/), let pid = Int32(m.1) else {
            throw CheckFailure(message: "no process_id in INFO server of port \(port)", location: "RedisDaemon")
        }
        self.pid = pid
    }

    /// Starts it again (after it was killed) with the settings read, waits until it answers, and
    /// records the new process for the test command to stop. Its dump file is removed first, so that
    /// a replica starts empty and copies its primary afresh.
    public func restart() throws {
        guard let dir = settings["dir"], let pidfile = settings["pidfile"], let logfile = settings["logfile"],
              let dbfilename = settings["dbfilename"] else {
            throw CheckFailure(message: "CONFIG GET did not give dir, pidfile, logfile and dbfilename", location: "RedisDaemon")
        }
        try? FileManager.default.removeItem(atPath: pidfile)
        try? FileManager.default.removeItem(atPath: dir + "/" + dbfilename)
        var args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "yes",
                    "--pidfile", pidfile, "--logfile", logfile, "--dir", dir, "--dbfilename", dbfilename,
                    "--enable-debug-command", "local"]
        if let databases = settings["databases"] { args += ["--databases", databases] }
        if settings["cluster-enabled"] == "yes" {
            for name in ["cluster-enabled", "cluster-port", "cluster-config-file", "cluster-node-timeout"] {
                if let value = settings[name] { args += ["--" + name, value] }
            }
        }
        let run = try runProgram("/usr/bin/redis-server", args, seconds: 20)
        guard run.status == 0 else { throw CheckFailure(message: "redis-server exited with \(run.status)", location: "RedisDaemon") }
        for _ in 0..<500 {
            if let text = try? String(contentsOfFile: pidfile, encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                recordSpawnedPID(pid)
                for _ in 0..<500 {
                    if (try? RawRedis(port: port).command(["PING"])) == "+PONG" { return }
                    Thread.sleep(forTimeInterval: 0.01)
                }
                throw CheckFailure(message: "redis-server on \(port) did not answer after its restart", location: "RedisDaemon")
            }
            Thread.sleep(forTimeInterval: 0.01)
        }
        throw CheckFailure(message: "redis-server on \(port) wrote no pid file", location: "RedisDaemon")
    }
}
