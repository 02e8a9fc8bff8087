import Foundation
import Synchronization
import Tandem
import TandemTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Keys no cache key should be able to smuggle anything through.
let hostileKeys: [String] = [
    "cr\rkey",
    "lf\nkey",
    "crlf\r\nFLUSHALL\r\n",
    "resp\r\n*1\r\n$8\r\nFLUSHALL\r\n",
    "space key SET injected 1",
    "nul\u{0}SET injected 1",
    "tab\tkey",
    "del\u{7f}key",
    String(repeating: "k", count: 300),
    // Swift strings are always valid Unicode: bytes that are not UTF-8 (from a socket, a file) become
    // U+FFFD when decoded into a String key, and that is what reaches the server.
    String(decoding: [0xff, 0xfe, 0x41, 0xc3], as: UTF8.self),
    "unicode-日本語-🎉",
]

/// Keys memcached cannot take: Tandem must refuse them before any I/O.
func memcachedRefuses(_ key: String) -> Bool {
    (":1:" + key).utf8.count > 250 || key.unicodeScalars.contains { $0.value <= 0x20 || $0.value == 0x7f }
}

/// A `MONITOR` connection to a Redis server: every command the server runs, one line each.
final class RedisMonitor: @unchecked Sendable {
    // Why @unchecked Sendable is safe: `fd` is immutable; `buffer` is only touched under `lock`.
    private let fd: Int32
    private let lock = NSLock()
    private var buffer: [UInt8] = []
    private let stopped = Atomic<Bool>(false)

    init(port: Int) throws {
        fd = try connectTCP(port: port, receiveTimeout: 0.1)
        _ = "MONITOR\r\n".withCString { send(fd, $0, 9, 0) }
        // The reader holds the monitor until `stop()` (or the server closing the connection) ends it.
        let t = Thread { [self] in
            var chunk = [UInt8](repeating: 0, count: 65536)
            while !stopped.load(ordering: .relaxed) {
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n > 0 {
                    lock.withLock { buffer += chunk[0..<n] }
                } else if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    break
                }
            }
        }
        t.start()
        // Wait for +OK: from then on every command is reported.
        for _ in 0..<200 where !lock.withLock({ buffer.starts(with: Array("+OK\r\n".utf8)) }) { Thread.sleep(forTimeInterval: 0.005) }
    }

    /// Ends the reader thread (within its 100 ms receive timeout).
    func stop() { stopped.store(true, ordering: .relaxed) }

    deinit { close(fd) }

    /// The commands seen so far, each as its arguments (unescaped bytes as UTF-8 text).
    func commands() -> [[String]] {
        let text = lock.withLock { buffer }
        var out: [[String]] = []
        var start = 0
        for i in text.indices where text[i] == 10 {
            let line = Array(text[start..<i])
            start = i + 1
            guard let open = line.firstIndex(of: UInt8(ascii: "]")) else { continue }
            out.append(RedisMonitor.arguments(Array(line[(open + 1)...])))
        }
        return out
    }

    /// Splits `"SET" "a\r\nb" "v"` into its arguments, undoing Redis's escapes (\\ \" \n \r \t \a \b \xHH).
    static func arguments(_ line: [UInt8]) -> [String] {
        var args: [String] = []
        var i = 0
        while i < line.count {
            guard line[i] == UInt8(ascii: "\"") else { i += 1; continue }
            i += 1
            var arg: [UInt8] = []
            while i < line.count, line[i] != UInt8(ascii: "\"") {
                if line[i] == UInt8(ascii: "\\"), i + 1 < line.count {
                    let e = line[i + 1]
                    switch e {
                    case UInt8(ascii: "n"): arg.append(10); i += 2
                    case UInt8(ascii: "r"): arg.append(13); i += 2
                    case UInt8(ascii: "t"): arg.append(9); i += 2
                    case UInt8(ascii: "a"): arg.append(7); i += 2
                    case UInt8(ascii: "b"): arg.append(8); i += 2
                    case UInt8(ascii: "x"):
                        let hex = String(decoding: line[(i + 2)..<min(i + 4, line.count)], as: UTF8.self)
                        arg.append(UInt8(hex, radix: 16) ?? 0); i += 4
                    default: arg.append(e); i += 2
                    }
                } else {
                    arg.append(line[i]); i += 1
                }
            }
            i += 1
            args.append(String(decoding: arg, as: UTF8.self))
        }
        return args
    }
}

extension Faults {
    @Suite struct BadInput {
        @Test(.timeLimit(.minutes(1)))
        func hostileKeysReachRedisAsExactlyOneCommandEach() async throws {
            let server = try await onPlainThread { try ServerProcess(.redis) }
            defer { server.stop() }
            let cache = try Caches(settings: ["default": CacheSettings(backend: "redis", location: [server.redisURL])]).default
            try await cache.async.set("warm", "up")  // the async connection exists before MONITOR starts
            _ = try await onPlainThread { try cache.get("warm") as String? }  // and one pooled connection
            let monitor = try await onPlainThread { try RedisMonitor(port: server.port) }
            defer { monitor.stop() }
            for (i, key) in hostileKeys.enumerated() {
                try await cache.async.set(key, "async-\(i)")
                #expect(try await cache.async.get(key) == "async-\(i)", "async round trip of \(key.debugDescription)")
                try await onPlainThread { try cache.set(key + "-b", "blocking-\(i)") }
                #expect(try await onPlainThread { try cache.get(key + "-b") as String? } == "blocking-\(i)")
            }
            try await Task.sleep(for: .milliseconds(300))
            let seen = monitor.commands().filter { $0.first != "MONITOR" }
            var expected: [[String]] = []
            for k in hostileKeys {
                let made = ":1:" + k
                expected.append(["SET", made])
                expected.append(["GET", made])
                expected.append(["SET", made + "-b"])
                expected.append(["GET", made + "-b"])
            }
            #expect(seen.count == expected.count, "the server ran exactly one command per call: \(seen.count) for \(expected.count) calls")
            #expect(zip(seen, expected).allSatisfy { Array($0.prefix(2)) == $1 },
                    "each command carried its key intact, in order")
            let dbsize = try await onPlainThread { try redisCommand(port: server.port, ["DBSIZE"]) }
            #expect(dbsize == ":\(1 + 2 * hostileKeys.count)\r\n", "no key other than the intended ones exists: \(dbsize)")
            #expect(try await onPlainThread { try redisCommand(port: server.port, ["EXISTS", "injected"]) } == ":0\r\n")
            Figures.record("hostile keys on Redis (CR, LF, CRLF + FLUSHALL, RESP injection, space + SET, NUL, tab, DEL, 300 bytes, non-UTF-8, emoji)", [
                "calls": expected.count, "commands_seen_by_MONITOR": seen.count, "keys_in_db": dbsize.trimmingCharacters(in: .whitespacesAndNewlines),
            ])
        }

        @Test(.timeLimit(.minutes(1)))
        func hostileKeysNeverReachMemcachedAndValidOnesRoundTrip() async throws {
            let server = try await onPlainThread { try ServerProcess(.memcached) }
            defer { server.stop() }
            let cache = try Caches(settings: ["default": CacheSettings(backend: "memcached", location: [server.address])]).default
            let before = try await onPlainThread { (try memcachedStat(server.address, "cmd_get"), try memcachedStat(server.address, "cmd_set")) }
            var refused = 0
            var stored = 0
            for (i, key) in hostileKeys.enumerated() {
                if memcachedRefuses(key) {
                    for face in FaceKind.allCases {
                        do {
                            switch face {
                            case .async: try await cache.async.set(key, "v")
                            case .blocking: try await onPlainThread { try cache.set(key, "v") }
                            }
                            Issue.record("memcached accepted the key \(key.debugDescription)")
                        } catch let e as CacheError {
                            guard e.code == .invalidKey else { Issue.record("expected invalidKey, got \(e)"); continue }
                            #expect(e.description.contains("invalid cache key"), "the error names the key")
                            refused += 1
                        }
                    }
                    await #expect(throws: CacheError.self) { _ = try await cache.async.get(key) as String? }
                    await #expect(throws: CacheError.self) { _ = try await cache.async.incr(key) }
                } else {
                    try await cache.async.set(key, "v\(i)")
                    #expect(try await onPlainThread { try cache.get(key) as String? } == "v\(i)")
                    stored += 1
                }
            }
            let after = try await onPlainThread { (try memcachedStat(server.address, "cmd_get"), try memcachedStat(server.address, "cmd_set")) }
            #expect(after.0 - before.0 == stored && after.1 - before.1 == stored,
                    "only the valid keys reached the server: gets \(after.0 - before.0), sets \(after.1 - before.1), valid keys \(stored)")
            Figures.record("hostile keys on memcached", [
                "refused_before_io": refused, "valid_keys_round_tripped": stored,
                "server_gets": after.0 - before.0, "server_sets": after.1 - before.1,
            ])
        }

        @Test(.timeLimit(.minutes(3)))
        func hugeValues() async throws {
            let redis = try await onPlainThread { try ServerProcess(.redis) }
            defer { redis.stop() }
            let memcached = try await onPlainThread { try ServerProcess(.memcached) }
            defer { memcached.stop() }
            let caches = try Caches(settings: [
                "default": CacheSettings(backend: "redis", location: [redis.redisURL], options: ["COMMAND_TIMEOUT": 10]),
                "memcached": CacheSettings(backend: "memcached", location: [memcached.address]),
                "locmem": CacheSettings(backend: "locmem", location: ["huge-\(UUID())"]),
            ])
            var pattern = [UInt8](repeating: 0x61, count: 32 << 20)
            for i in stride(from: 0, to: pattern.count, by: 4093) { pattern[i] = UInt8(truncatingIfNeeded: i) }  // not all one byte
            let huge = pattern
            /// Byte-for-byte equality with memcmp (elementwise `==` is slow under the sanitizers).
            @Sendable func same(_ a: [UInt8]?) -> Bool {
                guard let a, a.count == huge.count else { return false }
                return a.withUnsafeBytes { x in
                    huge.withUnsafeBytes { y in
                        guard let xp = x.baseAddress, let yp = y.baseAddress else { return false }
                        return memcmp(xp, yp, x.count) == 0
                    }
                }
            }
            var rows: [String: String] = [:]
            for alias in ["default", "locmem"] {
                let c = try caches[alias]
                try await c.async.set("huge", huge)
                #expect(same(try await c.async.get("huge")), "\(alias): 32 MiB round trip, async")
                try await onPlainThread { try c.set("huge-b", huge) }
                #expect(same(try await onPlainThread { try c.get("huge-b") as [UInt8]? }), "\(alias): 32 MiB round trip, blocking")
                rows[alias] = "32 MiB stored and read back intact in both faces"
            }
            // memcached's item limit (1 MiB by default): a typed error, and the old value is gone.
            let m = try caches["memcached"]
            try await m.async.set("big", "old")
            do {
                try await m.async.set("big", [UInt8](repeating: 1, count: 2 << 20))
                Issue.record("memcached stored 2 MiB")
            } catch let e as CacheError {
                guard e.code == .valueTooLarge else { Issue.record("expected valueTooLarge, got \(e)"); return }
            }
            #expect(try await m.async.get("big") as String? == nil, "the stale value is not served")
            rows["memcached"] = "2 MiB: CacheError.valueTooLarge, old value deleted"
            Figures.record("huge values", ["results": rows])
        }

        @Test func everyBackendOptionWithAWrongTypeOrValueNamesItsField() throws {
            // (backend, location, option, bad value)
            let cases: [(String, String, String, SettingValue)] = [
                ("redis", "redis://127.0.0.1:1", "CONNECT_TIMEOUT", "soon"), ("redis", "redis://127.0.0.1:1", "CONNECT_TIMEOUT", 0),
                ("redis", "redis://127.0.0.1:1", "COMMAND_TIMEOUT", [1]), ("redis", "redis://127.0.0.1:1", "COMMAND_TIMEOUT", -1),
                ("redis", "redis://127.0.0.1:1", "POOL_SIZE", "8"), ("redis", "redis://127.0.0.1:1", "POOL_SIZE", 0),
                ("redis", "redis://127.0.0.1:1", "POOL_SIZE", 2.5), ("redis", "redis://127.0.0.1:1", "POOL_TIMEOUT", -1),
                ("redis", "redis://127.0.0.1:1", "ASYNC_CONNECTIONS", 0), ("redis", "redis://127.0.0.1:1", "ASYNC_CONNECTIONS", 257),
                ("redis", "redis://127.0.0.1:1", "DB", "one"), ("redis", "redis://127.0.0.1:1", "DB", -1),
                ("redis", "redis://127.0.0.1:1", "USERNAME", 7), ("redis", "redis://127.0.0.1:1", "PASSWORD", 12345),
                ("redis", "redis://127.0.0.1:1", "ASYNC_UNSAFE", "sometimes"), ("redis", "redis://127.0.0.1:1", "NO_SUCH_OPTION", 1),
                ("memcached", "127.0.0.1:1", "BINARY_PROTOCOL", "yes"), ("memcached", "127.0.0.1:1", "TCP_NODELAY", 1),
                ("memcached", "127.0.0.1:1", "CONNECT_TIMEOUT", "x"), ("memcached", "127.0.0.1:1", "CONNECT_TIMEOUT", 0),
                ("memcached", "127.0.0.1:1", "POLL_TIMEOUT", nil), ("memcached", "127.0.0.1:1", "POLL_TIMEOUT", -2),
                ("memcached", "127.0.0.1:1", "POOL_SIZE", 0), ("memcached", "127.0.0.1:1", "POOL_SIZE", "16"),
                ("memcached", "127.0.0.1:1", "POOL_TIMEOUT", -1), ("memcached", "127.0.0.1:1", "ASYNC_WORKERS", 0),
                ("memcached", "127.0.0.1:1", "ASYNC_WORKERS", 1000), ("memcached", "127.0.0.1:1", "REMOVE_FAILED_SERVERS", "no"),
                ("memcached", "127.0.0.1:1", "RETRY_TIMEOUT", -1), ("memcached", "127.0.0.1:1", "CONSISTENT_HASHING", 0),
                ("memcached", "127.0.0.1:1", "USERNAME", "u"),  // SASL without the binary protocol (and without a password)
                ("memcached", "127.0.0.1:1", "PASSWORD", 5), ("memcached", "127.0.0.1:1", "ASYNC_UNSAFE", 3),
                ("memcached", "127.0.0.1:1", "MAX_ENTRIES", 10),
                ("locmem", "x", "MAX_ENTRIES", "many"), ("locmem", "x", "MAX_ENTRIES", 0), ("locmem", "x", "CULL_FREQUENCY", -1),
                ("locmem", "x", "CULL_FREQUENCY", 1.5), ("locmem", "x", "ASYNC_UNSAFE", "maybe"), ("locmem", "x", "DB", 1),
                ("dummy", "", "ANYTHING", 1),
            ]
            var named = 0
            for (backend, location, option, value) in cases {
                let settings = CacheSettings(backend: backend, location: location.isEmpty ? [] : [location], options: [option: value])
                do {
                    _ = try Caches(settings: ["default": settings])
                    Issue.record("\(backend) accepted OPTIONS.\(option) = \(value)")
                } catch let e as CacheError {
                    guard e.code == .invalidSetting, let alias = e.alias, let field = e.field, let reason = e.reason else {
                        Issue.record("\(backend) OPTIONS.\(option) = \(value): expected invalidSetting, got \(e)")
                        continue
                    }
                    #expect(alias == "default" && field.hasPrefix("OPTIONS."), "\(backend) \(option): \(e)")
                    #expect(!reason.isEmpty)
                    if field == "OPTIONS.\(option)" { named += 1 }
                    if option == "PASSWORD" { #expect(!e.description.contains("12345") && !e.description.contains("\(value)") || value == 5) }
                }
            }
            // SASL without the binary protocol names USERNAME; every other case names its own option.
            #expect(named >= cases.count - 1, "each error names the option at fault (\(named) of \(cases.count))")
            Figures.record("settings: wrong type or value for every backend option", ["cases": cases.count, "named_the_option": named])
        }

        @Test func malformedLocationsAndURLsAreRefusedBeforeAnyIO() async throws {
            let base = try TestServers.need(TestServers.httpUpstream, "HTTP upstream")
            let redisLocations = ["redis://", "redis://127.0.0.1:notaport", "redis://127.0.0.1:70000", "redis://127.0.0.1:0",
                                  "rediss://127.0.0.1:6379?ssl_cert_reqs=sometimes", "rediss://127.0.0.1:6379?ssl_ca_certs=/no/such/ca.pem", "redis://127.0.0.1:6379?ssl_certfile=/tmp/c.pem", "http://127.0.0.1:6379", "unix://", "unix://relative/path",
                                  "redis://127.0.0.1:6379/notadb", "redis://127.0.0.1:6379/-1", "redis://127.0.0.1:6379?db=x",
                                  "redis://[::1:6379", "127.0.0.1:6379", "redis://:secret-pw@:6379"]
            let memcachedLocations = ["127.0.0.1:notaport", "127.0.0.1:0", "127.0.0.1:99999", "with space:11211", ":11211", ""]
            let cacheURLs = ["mongo://h:1", "redis//h:1", "memcached://", "locmem", "://", "redis://u:secret-pw@h:notaport"]
            var refused = 0
            for location in redisLocations {
                let e = settingsError { _ = try Caches(settings: ["default": CacheSettings(backend: "redis", location: [location])]) }
                #expect(e?.field == "LOCATION", "redis \(location.debugDescription): \(String(describing: e))")
                #expect(!(e?.description.contains("secret-pw") ?? false), "the password is not in the error")
                if e != nil { refused += 1 }
            }
            for location in memcachedLocations {
                let e = settingsError { _ = try Caches(settings: ["default": CacheSettings(backend: "memcached", location: [location])]) }
                #expect(e?.field == "LOCATION", "memcached \(location.debugDescription): \(String(describing: e))")
                if e != nil { refused += 1 }
            }
            for url in cacheURLs {
                do {
                    _ = try Caches(settings: ["default": try CacheSettings(url: url)])
                    Issue.record("TANDEM_CACHE_URL \(url) was accepted")
                } catch let e as CacheError {
                    #expect(!e.description.contains("secret-pw"), "the password is not in the error: \(e)")
                    refused += 1
                }
            }
            // HTTP: refused before any connection (the upstream's accepted-connection count does not move).
            let http = UpstreamClient(loop: TestLoops.epoll)
            func connections() async throws -> Int { try await upstreamConnections(base, asking: http) }
            let before = try await connections()
            let badRequests = badHTTPRequests(base: base) + [
                UpstreamRequest(.get, "file:///etc/passwd"), UpstreamRequest(.get, base + "/a b"), UpstreamRequest(.get, "://x"),
                UpstreamRequest(.get, ""), UpstreamRequest(.get, "127.0.0.1/x"),
            ]
            for r in badRequests {
                do {
                    _ = try await http.async.send(r)
                    Issue.record("HTTP accepted \(r.method) \(r.url.debugDescription) \(r.headers)")
                } catch let e as UpstreamError {
                    switch e.code {
                    case .invalidURL, .invalidRequest: refused += 1
                    default: Issue.record("\(r.url.debugDescription): expected invalidURL/invalidRequest, got \(e)")
                    }
                }
            }
            let after = try await connections()
            #expect(after == before, "no bad request opened a connection (\(before) -> \(after))")
            await http.shutdown()
            Figures.record("malformed locations, cache URLs and HTTP requests", [
                "redis_locations": redisLocations.count, "memcached_locations": memcachedLocations.count,
                "cache_urls": cacheURLs.count, "http_requests": badRequests.count, "refused_before_io": refused,
                "upstream_connections_opened": after - before,
            ])
        }
    }
}

/// The settings error `body` throws, if it is one.
func settingsError(_ body: () throws -> Void) -> (alias: String, field: String, description: String)? {
    do { try body() } catch let e as CacheError {
        if e.code == .invalidSetting, let alias = e.alias, let field = e.field { return (alias, field, e.description) }
        return ("?", "?", e.description)
    } catch {
        return ("?", "?", "\(error)")
    }
    return nil
}
