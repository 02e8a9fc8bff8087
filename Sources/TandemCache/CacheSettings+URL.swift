extension CacheSettings {
    /// Settings from a cache URL: `locmem://name`, `dummy://`, `redis://[user:pass@]host:port[/db]`,
    /// `rediss://...` (TLS), `redis+sentinel://host:port[,host:port...]/service[/db]`, `unix:///path`,
    /// `memcached://host:port[,host:port...]`.
    ///
    /// Query parameters `timeout`, `key_prefix` and `version` set those fields; Redis keeps `db` in its
    /// location; every other parameter becomes an OPTION (upper-cased), which the backend must know:
    /// `redis://h:6379/0?connect_timeout=0.5` sets `CONNECT_TIMEOUT`, and `?bogus=1` is an
    /// ``CacheError/invalidSetting(alias:field:reason:)`` naming `OPTIONS.BOGUS` when the caches are built.
    /// A malformed query (`?=`, a repeated name, a bad percent escape) is an error here.
    public init(url: String, alias: String = "default") throws {
        func bad(_ reason: String) -> CacheError {
            .invalidSetting(alias: alias, field: "TANDEM_CACHE_URL", reason: "\(reason) in \"\(Redaction.location(url))\"")
        }
        let (scheme, rest, query) = try URLQuery.splitURL(url, expected: "expected scheme://...", bad)
        self.init()
        var passthrough: [(String, String)] = []
        var redisDB: String?
        for (name, value) in query {
            switch name.lowercased() {
            case "timeout":
                self.timeout = value.lowercased() == "none" || value.lowercased() == "never"
                    ? .never : try CacheSettings.parseTimeout(alias: alias, SettingValue.inferred(from: value))
            case "key_prefix": self.keyPrefix = value
            case "version":
                guard let v = Int(value) else {
                    throw CacheError.invalidSetting(alias: alias, field: "VERSION", reason: "expected an integer, got \"\(value)\"")
                }
                self.version = v
            case "db" where scheme == "redis" || scheme == "rediss" || scheme == "unix" || scheme.hasSuffix("+sentinel"):
                redisDB = value
            default: passthrough.append((name, value))
            }
        }
        switch scheme {
        case "locmem":
            backend = "locmem"
            location = rest.isEmpty ? [] : [rest]
        case "dummy":
            backend = "dummy"
        case "redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster":
            backend = "redis"
            location = [scheme + "://" + rest + (redisDB.map { "?db=\($0)" } ?? "")]
        case "memcached", "memcache", "pymemcache":
            backend = "memcached"
            location = rest.split(separator: ",").map(String.init).filter { !$0.isEmpty }
        default:
            throw CacheError.invalidSetting(alias: alias, field: "TANDEM_CACHE_URL",
                                            reason: "unknown scheme '\(scheme)'; use locmem://, dummy://, redis://, rediss://, redis+sentinel://, redis+cluster:// (or rediss+...), unix:// or memcached://")
        }
        for (name, value) in passthrough { options[name.uppercased()] = SettingValue.inferred(from: value) }
    }
}
