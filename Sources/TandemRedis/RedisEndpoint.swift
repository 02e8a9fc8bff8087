import Foundation
import TandemCache

#if canImport(Glibc)
import Glibc
#endif

/// Where one Redis server is and how to log in: parsed from a LOCATION and OPTIONS.
struct RedisEndpoint: Sendable, CustomStringConvertible {
    enum Address: Sendable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }
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

    /// Parses `redis://[user:password@]host:port[/db][?db=N]` or `unix:///path[?db=N]`.
    /// Options USERNAME, PASSWORD and DB fill what the URL does not say.
    static func parse(_ location: String, alias: String, options: BackendOptions) throws -> RedisEndpoint {
        func bad(_ reason: String) -> CacheError {
            .invalidSetting(alias: alias, field: "LOCATION", reason: "\(reason): \"\(Redaction.location(location))\"")
        }
        guard let schemeEnd = location.range(of: "://") else {
            throw bad("expected redis://host:port[/db] or unix:///path")
        }
        let scheme = location[..<schemeEnd.lowerBound].lowercased()
        var rest = String(location[schemeEnd.upperBound...])
        var query: [String: String] = [:]
        if let q = rest.firstIndex(of: "?") {
            for item in rest[rest.index(after: q)...].split(separator: "&") {
                let kv = item.split(separator: "=", maxSplits: 1)
                query[String(kv[0]).lowercased()] = kv.count > 1 ? String(kv[1]) : ""
            }
            rest = String(rest[..<q])
        }
        var db = try options.int("DB", default: 0, range: 0...Int(Int32.max))
        if let d = query["db"] {
            guard let v = Int(d), v >= 0 else { throw bad("db must be a non-negative integer") }
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
                guard let v = Int(path), v >= 0 else { throw bad("the path must be a database number") }
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

    /// Resolves the address into a socket address (blocking `getaddrinfo`: called off the loop, at setup).
    func resolve() throws -> ResolvedAddress {
        switch address {
        case .unix(let path):
            var a = sockaddr_un()
            a.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: a.sun_path) else {
                throw CacheError.connectionFailed(server: description, reason: "unix socket path too long")
            }
            withUnsafeMutableBytes(of: &a.sun_path) { raw in
                for (i, b) in bytes.enumerated() { raw[i] = b }
            }
            var storage = sockaddr_storage()
            withUnsafeMutableBytes(of: &storage) { dst in withUnsafeBytes(of: a) { dst.copyMemory(from: $0) } }
            return ResolvedAddress(storage: storage, length: socklen_t(MemoryLayout<sockaddr_un>.size), family: AF_UNIX)
        case .tcp(let host, let port):
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var result: UnsafeMutablePointer<addrinfo>?
            let rc = getaddrinfo(host, String(port), &hints, &result)
            guard rc == 0, let first = result else {
                throw CacheError.connectionFailed(server: description, reason: "cannot resolve host '\(host)' (getaddrinfo error \(rc))")
            }
            defer { freeaddrinfo(result) }
            var storage = sockaddr_storage()
            let len = first.pointee.ai_addrlen
            withUnsafeMutableBytes(of: &storage) { dst in
                dst.copyMemory(from: UnsafeRawBufferPointer(start: first.pointee.ai_addr, count: Int(len)))
            }
            return ResolvedAddress(storage: storage, length: len, family: first.pointee.ai_family)
        }
    }
}

/// A resolved socket address.
struct ResolvedAddress: @unchecked Sendable {
    // Why @unchecked Sendable is safe: a plain value (sockaddr bytes) that is never mutated after creation.
    let storage: sockaddr_storage
    let length: socklen_t
    let family: Int32
}
