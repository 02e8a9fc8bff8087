import CMemcached
import Dispatch
import Foundation
import Synchronization
@_spi(Backend) import TandemCache

/// What a memcached cache connects to and how: parsed from LOCATION and OPTIONS.
struct MemcachedConfiguration: Sendable {
    enum Server: Sendable, Hashable {
        case tcp(host: String, port: Int)
        case unix(path: String)
        var description: String {
            switch self {
            case .tcp(let h, let p): return "\(h):\(p)"
            case .unix(let path): return "unix:\(path)"
            }
        }
    }
    var servers: [Server]
    var binaryProtocol: Bool
    var tcpNoDelay: Bool
    var connectTimeoutMs: Int
    var pollTimeoutMs: Int
    var poolSize: Int
    var poolTimeout: Double
    var asyncWorkers: Int
    var removeFailedServers: Bool
    var retryTimeout: Int
    var consistentHashing: Bool
    var username: String?
    var password: String?

    var description: String { servers.map(\.description).joined(separator: ",") }

    static let optionNames: Set<String> = [
        "BINARY_PROTOCOL", "TCP_NODELAY", "CONNECT_TIMEOUT", "POLL_TIMEOUT", "POOL_SIZE", "POOL_TIMEOUT",
        "ASYNC_WORKERS", "REMOVE_FAILED_SERVERS", "RETRY_TIMEOUT", "CONSISTENT_HASHING", "USERNAME", "PASSWORD",
    ]

    /// LOCATION entries: `host:port`, `unix:/path`, `/path`, or `memcached://host:port` (a `;`/`,`
    /// separated string is already split by the settings parser).
    static func parse(_ config: BackendConfiguration) throws -> MemcachedConfiguration {
        var servers: [Server] = []
        for raw in config.location.flatMap({ $0.split(whereSeparator: { $0 == ";" || $0 == "," }).map(String.init) }) {
            var s = raw
            if let r = s.range(of: "://") { s = String(s[r.upperBound...]) }
            if s.hasPrefix("unix:") { s = String(s.dropFirst(5)) }
            if s.hasPrefix("/") {
                servers.append(.unix(path: s))
                continue
            }
            var host = s
            var port = 11211
            if let colon = s.lastIndex(of: ":") {
                host = String(s[..<colon])
                guard let p = Int(s[s.index(after: colon)...]), (1...65535).contains(p) else {
                    throw config.locationError("invalid port in \"\(raw)\"")
                }
                port = p
            }
            if host.hasPrefix("["), host.hasSuffix("]"), host.count > 2 { host = String(host.dropFirst().dropLast()) }
            guard !host.isEmpty, host.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7f && !"\"[]/@?#".unicodeScalars.contains($0) }) else {
                throw config.locationError("invalid server \"\(raw)\": expected host:port (a host without spaces, control or reserved characters)")
            }
            servers.append(.tcp(host: host, port: port))
        }
        guard !servers.isEmpty else { throw config.locationError("at least one memcached server (host:port or unix:/path) is required") }
        let o = config.options
        let c = MemcachedConfiguration(
            servers: servers,
            binaryProtocol: try o.bool("BINARY_PROTOCOL", default: false),
            tcpNoDelay: try o.bool("TCP_NODELAY", default: true),
            connectTimeoutMs: Int(try o.double("CONNECT_TIMEOUT", default: 1, range: 0.001...3600) * 1000),
            pollTimeoutMs: Int(try o.double("POLL_TIMEOUT", default: 1, range: 0.001...3600) * 1000),
            poolSize: try o.int("POOL_SIZE", default: 16, range: 1...1024),
            poolTimeout: try o.double("POOL_TIMEOUT", default: 1, range: 0...3600),
            asyncWorkers: try o.int("ASYNC_WORKERS", default: 2, range: 1...256),
            removeFailedServers: try o.bool("REMOVE_FAILED_SERVERS", default: true),
            retryTimeout: try o.int("RETRY_TIMEOUT", default: 2, range: 0...3600),
            consistentHashing: try o.bool("CONSISTENT_HASHING", default: true),
            username: try o.string("USERNAME"),
            password: try o.string("PASSWORD"))
        if (c.username != nil || c.password != nil) && !c.binaryProtocol {
            throw CacheError.invalidSetting(alias: config.alias, field: "OPTIONS.USERNAME",
                                            reason: "SASL authentication needs the binary protocol: set OPTIONS.BINARY_PROTOCOL to true")
        }
        if c.username == nil, o.values["ASYNC_WORKERS"] != nil {
            // Only SASL caches have worker threads; elsewhere the option would be silently ignored.
            throw CacheError.invalidSetting(alias: config.alias, field: "OPTIONS.ASYNC_WORKERS",
                                            reason: "only a cache with USERNAME/PASSWORD (SASL) has async workers; the async face runs on the event loop")
        }
        if (c.username == nil) != (c.password == nil) {
            throw CacheError.invalidSetting(alias: config.alias, field: "OPTIONS.PASSWORD", reason: "USERNAME and PASSWORD go together")
        }
        return c
    }

    /// libmemcached's configuration string for a pool of `size` handles.
    func optionString(size: Int) -> String {
        var parts = servers.map { s -> String in
            switch s {
            case .tcp(let h, let p): return "--SERVER=\(h):\(p)"
            case .unix(let path): return "--SOCKET=\"\(path)\""
            }
        }
        parts.append("--POOL-MIN=1")
        parts.append("--POOL-MAX=\(size)")
        return parts.joined(separator: " ")
    }
}
