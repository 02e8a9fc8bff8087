import Foundation
@_spi(Backend) import TandemCache
import TandemTransport

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
    /// TLS settings for a `rediss://` location; nil for plain TCP and Unix sockets.
    let tls: TLSClientSettings?
    /// Where the TLS settings came from, for errors: "LOCATION" or "OPTIONS".
    let tlsSource: String
    /// For a `redis+sentinel://` location: the sentinels to ask and the service whose primary this
    /// endpoint is (`address` is then only a placeholder).
    var sentinels: SentinelSpec? = nil
    /// For a `redis+cluster://` location: the seed nodes the slot map is first asked of.
    var clusterSeeds: [ServerAddress]? = nil
    /// The host name a cluster node announces (`cluster-announce-hostname`) while the map gives its
    /// IP address: TLS checks the certificate against it (and sends it as SNI).
    var announcedHostname: String? = nil

    /// The sentinels of a `redis+sentinel://` location and the service (Sentinel's "master name").
    struct SentinelSpec: Sendable, Hashable {
        let hosts: [ServerAddress]
        let service: String
        /// The sentinels' own credentials (`SENTINEL_USERNAME`, `SENTINEL_PASSWORD`): a sentinel
        /// with `requirepass` wants them; the location's credentials are the data nodes'.
        var username: String? = nil
        var password: String? = nil

        /// What a connection to a sentinel sends first: AUTH when the sentinels want a password.
        var handshake: [[[UInt8]]] {
            guard let password else { return [] }
            if let username { return [["AUTH".bytes, username.bytes, password.bytes]] }
            return [["AUTH".bytes, password.bytes]]
        }
    }

    /// The name TLS checks the certificate against (and sends as SNI): the host name the node
    /// announces, else the location's host.
    var tlsHost: String { announcedHostname ?? host }

    /// The host connected to ("" for a Unix socket).
    var host: String {
        if case .tcp(let host, _) = address { return host }
        return ""
    }

    /// `redis://host:port/db`, `unix:///path?db=N` or `redis+sentinel://host:port,.../service/db`,
    /// never with credentials.
    var description: String {
        func hostList(_ addresses: [ServerAddress]) -> String {
            addresses.map { a -> String in
                guard case .tcp(let h, let p) = a else { return "?" }
                return "\(h.contains(":") ? "[\(h)]" : h):\(p)"
            }.joined(separator: ",")
        }
        if let sentinels {
            return "\(tls == nil ? "redis" : "rediss")+sentinel://\(hostList(sentinels.hosts))/\(sentinels.service)/\(db)"
        }
        if let clusterSeeds {
            return "\(tls == nil ? "redis" : "rediss")+cluster://\(hostList(clusterSeeds))"
        }
        switch address {
        case .tcp(let host, let port): return "\(tls == nil ? "redis" : "rediss")://\(host.contains(":") ? "[\(host)]" : host):\(port)/\(db)"
        case .unix(let path): return "unix://\(path)?db=\(db)"
        }
    }

    /// TLS settings a `rediss://` location takes as query parameters (redis-py's names), and as
    /// OPTIONS in upper case.
    static let tlsParameters: [String] = ["ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"]
    /// Other names for TLS that some clients use: refused with a pointer to rediss://, never ignored.
    static let otherTLSParameters: Set<String> = ["tls", "ssl", "tls_ca_cert", "tls_cert", "tls_key", "sslmode"]
    /// redis-py's `ssl_check_hostname` (true by default): false checks the certificate's chain but not
    /// the name in it.
    static let checkHostnameParameter = "ssl_check_hostname"

    /// Parses `redis[s]://[user:password@]host:port[/db][?db=N]` or `unix:///path[?db=N]`; a
    /// `rediss://` location also takes `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`,
    /// `ssl_cert_reqs` (`required`, the default, or `none`) and `ssl_check_hostname` (`true`, the
    /// default, or `false`).
    /// Options USERNAME, PASSWORD, DB and SSL_* fill what the URL does not say.
    static func parse(_ location: String, alias: String, options: BackendOptions) throws -> RedisEndpoint {
        func bad(_ reason: String) -> CacheError {
            .invalidSetting(alias: alias, field: "LOCATION", reason: "\(reason): \"\(Redaction.location(location))\"")
        }
        let (scheme, rest, items) = try URLQuery.splitURL(location, expected: "expected redis://host:port[/db], rediss://host:port[/db] or unix:///path", bad)
        var query: [String: String] = [:]
        for (name, value) in items { query[name.lowercased()] = value }
        for name in query.keys where name != "db" && !tlsParameters.contains(name) && name != checkHostnameParameter {
            if otherTLSParameters.contains(name) {
                throw bad("query parameter '\(name)' is not how TLS is asked for here: use a rediss:// location (with ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs)")
            }
            throw bad("unknown query parameter '\(name)' (a Redis location takes 'db', and for rediss:// 'ssl_ca_certs', 'ssl_certfile', 'ssl_keyfile', 'ssl_cert_reqs'; put other settings in OPTIONS)")
        }
        let tls = try parseTLS(scheme: scheme.hasPrefix("rediss+") ? "rediss" : scheme, query: query, options: options, bad: bad)
        var db = try options.int("DB", default: 0, range: 0...Int(Int32.max))
        if let d = query["db"] {
            guard let v = Int(d), (0...Int(Int32.max)).contains(v) else { throw bad("db must be a non-negative integer") }
            db = v
        }
        var username = try options.string("USERNAME")
        var password = try options.string("PASSWORD")
        if !scheme.hasSuffix("+sentinel") {
            for name in ["SENTINEL_USERNAME", "SENTINEL_PASSWORD"] where try options.string(name) != nil {
                throw CacheError.invalidSetting(alias: alias, field: "OPTIONS.\(name)",
                                                reason: "only for a redis+sentinel:// or rediss+sentinel:// location (this one is \(scheme)://)")
            }
        }
        switch scheme {
        case "unix":
            guard rest.hasPrefix("/"), rest.count > 1 else { throw bad("unix:// needs an absolute socket path") }
            return RedisEndpoint(address: .unix(path: rest), db: db, username: username, password: password, tls: nil, tlsSource: "")
        case "redis", "rediss", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster":
            break
        default:
            throw bad("unsupported scheme '\(scheme)'")
        }
        let sentinel = scheme.hasSuffix("+sentinel")
        let cluster = scheme.hasSuffix("+cluster")
        var authority = rest
        var service: String?
        if let slash = rest.firstIndex(of: "/") {
            authority = String(rest[..<slash])
            var path = rest[rest.index(after: slash)...]
            if sentinel {
                // SERVICE[/db]
                let name = path.prefix(while: { $0 != "/" })
                path = path.dropFirst(name.count).drop(while: { $0 == "/" })
                guard !name.isEmpty, name.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7f }) else {
                    throw bad("a sentinel location names its service: redis+sentinel://host:port[,host:port...]/SERVICE[/db]")
                }
                service = String(name).removingPercentEncoding ?? String(name)
            }
            if !path.isEmpty {
                guard let v = Int(path), (0...Int(Int32.max)).contains(v) else { throw bad("the path must be a database number") }
                db = v
            }
        }
        if sentinel && service == nil {
            throw bad("a sentinel location names its service: redis+sentinel://host:port[,host:port...]/SERVICE[/db]")
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
        if cluster {
            guard db == 0 else { throw bad("Redis Cluster has only database 0") }
            let seeds = try authority.split(separator: ",", omittingEmptySubsequences: false).map {
                try hostPort(String($0), defaultPort: 6379, bad: bad)
            }
            var e = RedisEndpoint(address: .tcp(host: "cluster", port: 0), db: 0, username: username, password: password,
                                  tls: tls?.settings, tlsSource: tls?.source ?? "")
            e.clusterSeeds = seeds.map { .tcp(host: $0.host, port: $0.port) }
            return e
        }
        if let service {
            let hosts = try authority.split(separator: ",", omittingEmptySubsequences: false).map {
                try hostPort(String($0), defaultPort: 26379, bad: bad)
            }
            var e = RedisEndpoint(address: .tcp(host: "sentinel", port: 0), db: db, username: username, password: password,
                                  tls: tls?.settings, tlsSource: tls?.source ?? "")
            e.sentinels = SentinelSpec(hosts: hosts.map { .tcp(host: $0.host, port: $0.port) }, service: service,
                                       username: try options.string("SENTINEL_USERNAME"), password: try options.string("SENTINEL_PASSWORD"))
            if e.sentinels?.username != nil && e.sentinels?.password == nil {
                throw CacheError.invalidSetting(alias: alias, field: "OPTIONS.SENTINEL_USERNAME",
                                                reason: "a sentinel user name needs OPTIONS.SENTINEL_PASSWORD too")
            }
            return e
        }
        let (host, port) = try hostPort(authority, defaultPort: 6379, bad: bad)
        return RedisEndpoint(address: .tcp(host: host, port: port), db: db, username: username, password: password,
                             tls: tls?.settings, tlsSource: tls?.source ?? "")
    }

    /// `host[:port]` or `[v6]:port`, checked.
    private static func hostPort(_ authority: String, defaultPort: Int, bad: (String) -> CacheError) throws -> (host: String, port: Int) {
        var host = authority
        var port = defaultPort
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
        guard host.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7f && !"[]/@?#,;".unicodeScalars.contains($0) }) else {
            throw bad("the host contains a space, a control character or a reserved character")
        }
        return (host, port)
    }

    /// The TLS settings of a `rediss://` location, from its query parameters, then OPTIONS; an SSL
    /// setting anywhere else is an error (it would otherwise be ignored, and the bytes go in clear).
    private static func parseTLS(scheme: String, query: [String: String], options: BackendOptions,
                                 bad: (String) -> CacheError) throws -> (settings: TLSClientSettings, source: String)? {
        let fromOptions = try tlsParameters.compactMap { name in try options.string(name.uppercased()).map { (name, $0) } }
        let fromQuery = (tlsParameters + [checkHostnameParameter]).compactMap { name in query[name].map { (name, $0) } }
        // OPTIONS.SSL_CHECK_HOSTNAME: a boolean, or its text.
        let checkOption: String?
        if let text = try? options.string(checkHostnameParameter.uppercased()) {
            checkOption = text
        } else {
            checkOption = options.values[checkHostnameParameter.uppercased()] != nil
                ? String(try options.bool(checkHostnameParameter.uppercased(), default: true)) : nil
        }
        guard scheme == "rediss" else {
            if let (name, _) = fromQuery.first {
                throw bad("query parameter '\(name)' is a TLS setting, and this is not a rediss:// location")
            }
            if let name = fromOptions.first?.0 ?? (checkOption != nil ? checkHostnameParameter : nil) {
                throw CacheError.invalidSetting(alias: options.alias, field: "OPTIONS.\(name.uppercased())",
                                                reason: "a TLS setting, and the location is not rediss://")
            }
            return nil
        }
        var values: [String: String] = [:]
        if let checkOption { values[checkHostnameParameter] = checkOption }
        for (name, value) in fromOptions { values[name] = value }
        for (name, value) in fromQuery { values[name] = value }
        var settings = TLSClientSettings()
        for (name, value) in values {
            guard !value.isEmpty else { throw bad("'\(name)' is empty") }
        }
        settings.caFile = values["ssl_ca_certs"]
        settings.certificateFile = values["ssl_certfile"]
        settings.keyFile = values["ssl_keyfile"]
        switch values["ssl_cert_reqs"]?.lowercased() {
        case nil, "required", "cert_required": settings.verifyPeer = true
        case "none", "cert_none": settings.verifyPeer = false
        case let other?:
            throw bad("ssl_cert_reqs must be 'required' (the default) or 'none', not '\(other)'")
        }
        switch values[checkHostnameParameter]?.lowercased() {
        case nil, "true", "1", "yes": settings.checkHostname = true
        case "false", "0", "no": settings.checkHostname = false
        case let other?:
            throw bad("ssl_check_hostname must be 'true' (the default) or 'false', not '\(other)'")
        }
        return (settings, fromQuery.isEmpty ? "OPTIONS" : "LOCATION")
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
