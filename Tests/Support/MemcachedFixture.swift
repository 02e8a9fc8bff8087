import Foundation
import Synchronization
import Tandem

private let nextMemcachedNamespace = Atomic<Int>(0)

/// memcached on the three test servers. Concurrent fixtures share the servers, so each puts its own
/// namespace in front of every key (through the key function); `clear()` (flush_all) is only run by the
/// behaviour named "clear", which gets a server of its own.
public struct MemcachedFixture: CacheFixture {
    public let namespace: String
    public let servers: [String]
    public let options: [String: SettingValue]
    /// The loop the async face runs on.
    public let loop: any TandemEventLoop

    public init(isolatedServer: String? = nil, options: [String: SettingValue] = [:], loop: TestLoops.Kind = .epoll) {
        self.loop = loop.loop
        namespace = "t\(nextMemcachedNamespace.add(1, ordering: .relaxed).newValue)-"
        servers = isolatedServer.map { [$0] } ?? TestServers.memcachedServers
        // A generous poll timeout (the default is 1 s): these tests are about results, on two cores
        // shared with load tests and sanitizers.
        self.options = options.merging(["POLL_TIMEOUT": 5]) { mine, _ in mine }
    }

    public var stores: Bool { true }
    public var culls: Bool { false }
    public var strictKeys: Bool { true }
    public var keyNamespace: String { namespace }

    public func makeCache(_ configure: (inout CacheSettings) -> Void) throws -> Cache {
        var s = CacheSettings(backend: "memcached", location: servers, options: options)
        configure(&s)
        let inner = s.keyFunction
        let ns = namespace
        s.keyFunction = { key, prefix, version in ns + (inner?(key, prefix, version) ?? "\(prefix):\(version):\(key)") }
        return try BackendRegistry.standard.makeCache(alias: "memcached-test", settings: s, loop: loop)
    }

    /// memcached keeps a key between its timeout and one second longer (whole-second clock): waiting
    /// one second more than asked makes "gone after the timeout" certain.
    public func passTime(_ seconds: Double) async throws {
        try await Task.sleep(for: .milliseconds(Int(seconds * 1000) + 1020))
    }
}

/// A server process a test starts, stops, restarts on the same port, or pauses itself: `memcached`
/// or `redis-server` on a free loopback port. Its PID is recorded in `$TANDEM_RUN_DIR/spawned.pids`
/// so that the test command stops it even if the test process dies.
///
/// Started with `posix_spawn` and reaped with `waitpid`, not with Foundation's `Process`: with many
/// servers started and killed at once from several threads, `Process` sometimes misses a child's exit
/// and `waitUntilExit()` spins forever on a zombie (seen in the sanitizer phase of CI).
public final class ServerProcess: @unchecked Sendable {
    // Why @unchecked Sendable is safe: `child` is only touched through `lock`; `portValue` is set
    // only in init, before the object is shared.
    /// `sentinel`: `redis-server --sentinel` with a config file made at each start, whose lines
    /// after `port`, `bind` and `dir` are the extra arguments (`sentinel monitor ...`, `requirepass ...`).
    public enum Kind: Sendable { case memcached, redis, sentinel }
    public let kind: Kind
    /// The port (set once, in init).
    private var portValue = 0
    public var port: Int { portValue }
    /// The running child's PID (0: none).
    private var child: pid_t = 0
    private let lock = NSLock()
    private let extra: [String]

    /// Starts the server at once (on another free port if the first one was taken meanwhile).
    public init(_ kind: Kind, extraArguments: [String] = []) throws {
        self.kind = kind
        extra = extraArguments
        var lastError: (any Error)?
        for _ in 0..<5 {
            let candidate = try freeLoopbackPort()
            portValue = candidate
            do {
                try start()
                return
            } catch {
                lastError = error
                stop()
            }
        }
        throw lastError ?? CheckFailure(message: "cannot start \(kind)", location: "ServerProcess")
    }

    /// `127.0.0.1:PORT`.
    public var address: String { "127.0.0.1:\(port)" }
    /// `redis://127.0.0.1:PORT` (for Redis).
    public var redisURL: String { "redis://127.0.0.1:\(port)" }
    /// The running process's PID, if any.
    public var pid: Int32? { lock.withLock { child > 0 ? child : nil } }

    private var commandLine: (String, [String]) {
        switch kind {
        case .memcached:
            return ("/usr/bin/memcached", ["-l", "127.0.0.1", "-p", String(port), "-U", "0", "-u", "root"] + extra)
        case .redis:
            return ("/usr/bin/redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                              "--daemonize", "no", "--enable-debug-command", "local", "--dir", "/tmp",
                                              "--dbfilename", "tandem-test-\(port).rdb", "--repl-diskless-sync-delay", "0"] + extra)
        case .sentinel:
            return ("/usr/bin/redis-server", [sentinelConfigPath, "--sentinel"])
        }
    }

    private var sentinelConfigPath: String { "/tmp/tandem-test-sentinel-\(port).conf" }

    /// A sentinel's config file, written afresh at each start (a sentinel rewrites its own).
    private func writeSentinelConfig() throws {
        let text = (["port \(port)", "bind 127.0.0.1", "dir /tmp"] + extra).joined(separator: "\n") + "\n"
        try Data(text.utf8).write(to: URL(fileURLWithPath: sentinelConfigPath))
    }

    /// Starts (or restarts, on the same port) the server and waits until it answers.
    public func start() throws {
        lock.lock()
        defer { lock.unlock() }
        if kind == .sentinel { try writeSentinelConfig() }
        let (path, args) = commandLine
        child = try spawnChild(path, args)
        recordSpawnedPID(child)
        let ping = kind == .memcached ? "version\r\n" : "PING\r\n"
        for _ in 0..<500 {
            if (try? rawExchange(port: port, Array(ping.utf8), timeout: 0.2) { $0.last == 10 })?.isEmpty == false { return }
            // Exited (its port was taken, say): no use waiting.
            var status: Int32 = 0
            if waitpid(child, &status, WNOHANG) == child {
                child = 0
                throw CheckFailure(message: "\(path) on \(port) exited at start", location: "ServerProcess")
            }
            Thread.sleep(forTimeInterval: 0.01)
        }
        throw CheckFailure(message: "\(path) on \(port) did not start", location: "ServerProcess")
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits for it to be gone.
    public func stop() {
        lock.lock()
        defer { lock.unlock() }
        if child > 0 {
            kill(child, SIGKILL)
            reapChild(child)
        }
        child = 0
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: connections stay open, nothing is answered.
    public func pause(_ paused: Bool) {
        lock.withLock {
            if child > 0 { kill(child, paused ? SIGSTOP : SIGCONT) }
        }
    }

    deinit {
        if child > 0 {
            kill(child, SIGCONT)
            kill(child, SIGKILL)
            reapChild(child)
        }
        if kind == .sentinel { try? FileManager.default.removeItem(atPath: sentinelConfigPath) }
    }
}

/// Records `pid` in `$TANDEM_RUN_DIR/spawned.pids`, so that the test command stops that server even if
/// the test process dies.
public func recordSpawnedPID(_ pid: pid_t) {
    guard let dir = ProcessInfo.processInfo.environment["TANDEM_RUN_DIR"] else { return }
    let file = dir + "/spawned.pids"
    if !FileManager.default.fileExists(atPath: file) { _ = FileManager.default.createFile(atPath: file, contents: nil) }
    if let h = FileHandle(forWritingAtPath: file) {
        h.seekToEndOfFile()
        h.write(Data("\(pid)\n".utf8))
        try? h.close()
    }
}

/// A memcached process a test starts (and stops) itself, on a free loopback port.
public typealias MemcachedProcess = ServerProcess

extension ServerProcess {
    /// A memcached on a free loopback port.
    public convenience init(extraArguments: [String] = []) throws {
        try self.init(.memcached, extraArguments: extraArguments)
    }
}

/// A free TCP port on 127.0.0.1 for a server a test starts. It is taken below Linux's ephemeral range
/// (32768 and up), so that the many client connections the tests open cannot take it between this
/// check and the server's bind (it happened under a loaded sanitizer build); a port from the
/// ephemeral range only if none of 200 tries is free.
public func freeLoopbackPort() throws -> Int {
    for _ in 0..<200 {
        let candidate = Int.random(in: 20_000..<32_000)
        if let (s, port) = try? boundLoopbackSocket(port: candidate) {
            close(s)
            return port
        }
    }
    let (s, port) = try boundLoopbackSocket()
    close(s)
    return port
}

/// A socket that listens on a free loopback port, accepts connections (in the kernel's backlog) and
/// never answers: a server that hangs. The caller closes it.
public func silentListener() throws -> (Int32, Int) {
    let (s, port) = try boundLoopbackSocket()
    listen(s, 16)
    return (s, port)
}

private func boundLoopbackSocket(port: Int = 0) throws -> (Int32, Int) {
    let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let rc = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, len) } }
    guard rc == 0 else {
        close(s)
        throw CheckFailure(message: "bind failed", location: "boundLoopbackSocket")
    }
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) } }
    return (s, Int(UInt16(bigEndian: addr.sin_port)))
}

/// The value stored under `key` on one memcached server, read directly ("get" in the text protocol).
public func memcachedRawGet(_ server: String, _ key: String) throws -> String? {
    guard let (host, port) = TestServers.hostPort(server) else { return nil }
    let reply = try rawExchange(host: host, port: port, Array("get \(key)\r\n".utf8)) { bytes in
        bytes.count >= 5 && Array(bytes.suffix(5)) == Array("END\r\n".utf8)
    }
    let text = String(decoding: reply, as: UTF8.self)
    guard text.hasPrefix("VALUE ") else { return nil }
    let lines = text.components(separatedBy: "\r\n")
    return lines.count > 1 ? lines[1] : nil
}

/// One counter from a memcached server's `stats` (e.g. `cmd_get`), read directly; -1 if absent.
public func memcachedStat(_ server: String, _ name: String) throws -> Int {
    guard let (host, port) = TestServers.hostPort(server) else { return -1 }
    let reply = String(decoding: try rawExchange(host: host, port: port, Array("stats\r\n".utf8)) {
        $0.count >= 5 && Array($0.suffix(5)) == Array("END\r\n".utf8)
    }, as: UTF8.self)
    for line in reply.components(separatedBy: "\r\n") where line.hasPrefix("STAT \(name) ") {
        return Int(line.split(separator: " ")[2]) ?? -1
    }
    return -1
}
