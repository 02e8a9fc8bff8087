import Foundation
import TandemCache

#if canImport(Glibc)
import Glibc
#endif

/// Where one Redis server is and how to log in: parsed from a LOCATION and OPTIONS.
struct RedisEndpoint: Sendable, CustomStringConvertible {
    typealias Address = ServerAddress
    let address: Address
    let db: Int
    let username: String?
    let password: String?

    /// `redis://host:port/db` or `unix:///path?db=N`, never with credentials.
    var description: String {
        switch address {
        case .tcp(let host, let port): return "redis://\(host.contains(":") ? "[\(host)]" : host):\(port)/\(db)"
        case .unix(let path): return "unix://\(path)?db=\(db)"
        }
    }

    /// Query parameters that ask for TLS (redis-py's and others' names): refused, never ignored.
    static let tlsParameters: Set<String> = ["tls", "ssl", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
                                             "ssl_check_hostname", "tls_ca_cert", "tls_cert", "tls_key", "sslmode"]

    /// Parses `redis://[user:password@]host:port[/db][?db=N]` or `unix:///path[?db=N]`.
    /// Options USERNAME, PASSWORD and DB fill what the URL does not say.
    static func parse(_ location: String, alias: String, options: BackendOptions) throws -> RedisEndpoint {
        func bad(_ reason: String) -> CacheError {
            .invalidSetting(alias: alias, field: "LOCATION", reason: "\(reason): \"\(Redaction.location(location))\"")
        }
        let (scheme, rest, items) = try URLQuery.splitURL(location, expected: "expected redis://host:port[/db] or unix:///path", bad)
        var query: [String: String] = [:]
        for (name, value) in items { query[name.lowercased()] = value }
        for name in query.keys where name != "db" {
            if tlsParameters.contains(name) {
                throw bad("query parameter '\(name)' asks for TLS, which this build cannot speak to Redis (Debian's hiredis 0.14 has none); refusing rather than sending in plain text")
            }
            throw bad("unknown query parameter '\(name)' (a Redis location takes only 'db'; put other settings in OPTIONS)")
        }
        var db = try options.int("DB", default: 0, range: 0...Int(Int32.max))
        if let d = query["db"] {
            guard let v = Int(d), (0...Int(Int32.max)).contains(v) else { throw bad("db must be a non-negative integer") }
            db = v
        }
        var username = try options.string("USERNAME")
        var password = try options.string("PASSWORD")
        switch scheme {
        case "rediss":
            throw bad("rediss:// (TLS) is unavailable: Debian's hiredis 0.14 has no TLS support; use redis:// on a trusted network or a TLS tunnel")
        case "unix":
            guard rest.hasPrefix("/"), rest.count > 1 else { throw bad("unix:// needs an absolute socket path") }
            return RedisEndpoint(address: .unix(path: rest), db: db, username: username, password: password)
        case "redis":
            break
        default:
            throw bad("unsupported scheme '\(scheme)'")
        }
        var authority = rest
        if let slash = rest.firstIndex(of: "/") {
            authority = String(rest[..<slash])
            let path = rest[rest.index(after: slash)...]
            if !path.isEmpty {
                guard let v = Int(path), (0...Int(Int32.max)).contains(v) else { throw bad("the path must be a database number") }
                db = v
            }
        }
        if let at = authority.lastIndex(of: "@") {
            let userinfo = authority[..<at]
            authority = String(authority[authority.index(after: at)...])
            if let colon = userinfo.firstIndex(of: ":") {
                let u = String(userinfo[..<colon])
                username = u.isEmpty ? username : (u.removingPercentEncoding ?? u)
                let p = String(userinfo[userinfo.index(after: colon)...])
                password = p.removingPercentEncoding ?? p
            } else if !userinfo.isEmpty {
                password = String(userinfo).removingPercentEncoding ?? String(userinfo)
            }
        }
        var host = authority
        var port = 6379
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw bad("unclosed [ in IPv6 address") }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { throw bad("invalid port") }
                port = p
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let p = Int(authority[authority.index(after: colon)...]), (1...65535).contains(p) else { throw bad("invalid port") }
            port = p
        }
        guard !host.isEmpty else { throw bad("missing host") }
        guard host.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7f && !"[]/@?#".unicodeScalars.contains($0) }) else {
            throw bad("the host contains a space, a control character or a reserved character")
        }
        return RedisEndpoint(address: .tcp(host: host, port: port), db: db, username: username, password: password)
    }

    /// The commands that prepare a new connection: AUTH and SELECT as needed.
    var handshake: [[[UInt8]]] {
        var out: [[[UInt8]]] = []
        if let password {
            if let username { out.append(["AUTH".bytes, username.bytes, password.bytes]) } else { out.append(["AUTH".bytes, password.bytes]) }
        }
        if db != 0 { out.append(["SELECT".bytes, String(db).bytes]) }
        return out
    }
}

extension RedisEndpoint {
    /// The addresses to try when no name lookup is needed (nil for a host name).
    func addressesWithoutLookup() throws(CacheError) -> [ResolvedAddress]? {
        try address.addressesWithoutLookup(description: description)
    }

    /// Every address of the server, looked up if needed (blocks: never on a loop thread).
    func resolveAll() throws(CacheError) -> [ResolvedAddress] { try address.resolveAll(description: description) }
}
