import ServiceLifecycle
import TandemLoop

import Foundation

/// The named-cache registry, configured like Django's `CACHES`. Switching LocMem to Redis is a
/// settings change: code asks for `caches["default"]` either way.
///
/// Every cache is built (and its settings validated) when the registry is created, so bad settings fail
/// at start-up with an error naming the alias and the field, never later and never silently.
/// `import Tandem` adds initialisers that use the standard backends (LocMem, Dummy, Redis, memcached).
public final class Caches: Sendable {
    private let caches: [String: Cache]

    /// The settings each alias was built from (secrets are redacted in their descriptions).
    public let settings: [String: CacheSettings]

    /// Builds every cache in `settings` with the backends of `registry`. With no settings at all,
    /// `default` is a LocMem cache. Settings that lack `default` are an error, as in Django.
    /// Socket-driven backends run on `loop` when given, else spread over `loopGroup`'s loops (default:
    /// `EventLoops.group`, a loop per core). Give at most one of the two.
    public init(settings: [String: CacheSettings], loop: (any TandemEventLoop)? = nil, loopGroup: TandemEventLoopGroup? = nil,
                registry: BackendRegistry) throws {
        precondition(loop == nil || loopGroup == nil, "give Caches a loop or a loop group, not both")
        if loop == nil, loopGroup == nil { try Caches.checkLoopSetting(ProcessInfo.processInfo.environment) }
        let effective = settings.isEmpty ? ["default": CacheSettings()] : settings
        guard effective["default"] != nil else {
            throw CacheError.invalidSetting(alias: "default", field: "(entry)", reason: "a 'default' cache must be configured")
        }
        var built: [String: Cache] = [:]
        for (alias, s) in effective {
            built[alias] = try registry.makeCache(alias: alias, settings: s, loop: loop, loopGroup: loopGroup)
        }
        self.caches = built
        self.settings = effective
    }

    /// Builds the registry from JSON in Django's `CACHES` shape:
    /// `{"default": {"BACKEND": "redis", "LOCATION": [...], "TIMEOUT": 300, "KEY_PREFIX": "", "VERSION": 1, "OPTIONS": {...}}}`.
    public convenience init(json: Data, loop: (any TandemEventLoop)? = nil, loopGroup: TandemEventLoopGroup? = nil, registry: BackendRegistry) throws {
        try self.init(settings: try Caches.parseJSON(json), loop: loop, loopGroup: loopGroup, registry: registry)
    }

    /// Parses Django-shaped JSON into settings (without building anything).
    public static func parseJSON(_ json: Data) throws -> [String: CacheSettings] {
        let root: SettingValue
        do {
            root = try JSONDecoder().decode(SettingValue.self, from: json)
        } catch {
            throw CacheError.invalidSetting(alias: "(all)", field: "(json)", reason: "not valid JSON: \(error)")
        }
        guard case .dict(let entries) = root else {
            throw CacheError.invalidSetting(alias: "(all)", field: "(json)", reason: "expected an object of aliases, got \(root.typeName)")
        }
        var out: [String: CacheSettings] = [:]
        for (alias, value) in entries { out[alias] = try CacheSettings.parse(alias: alias, value) }
        return out
    }

    /// Builds the registry from the environment: `TANDEM_CACHES` (the JSON form), else `TANDEM_CACHE_URL`
    /// (`locmem://name`, `dummy://`, `redis://...`, `memcached://host:port,host:port`, with optional
    /// `?timeout=&key_prefix=&version=` and backend options in the query), else LocMem.
    /// `TANDEM_EVENT_LOOPS` (the size of `EventLoops.group`) is checked here too.
    public static func fromEnvironment(_ environment: [String: String], loop: (any TandemEventLoop)? = nil, loopGroup: TandemEventLoopGroup? = nil,
                                       registry: BackendRegistry) throws -> Caches {
        try Caches(settings: try settingsFromEnvironment(environment), loop: loop, loopGroup: loopGroup, registry: registry)
    }

    /// The settings `fromEnvironment` would build.
    public static func settingsFromEnvironment(_ environment: [String: String]) throws -> [String: CacheSettings] {
        try checkLoopSetting(environment)
        if let json = environment["TANDEM_CACHES"], !json.isEmpty {
            return try parseJSON(Data(json.utf8))
        }
        if let url = environment["TANDEM_CACHE_URL"], !url.isEmpty {
            return ["default": try CacheSettings(url: url, alias: "default")]
        }
        return [:]
    }

    /// Checks `TANDEM_EVENT_LOOPS` in `environment` (the size of `EventLoops.group`, which
    /// caches built without a loop use): a bad value is ``CacheError/invalidSetting(alias:field:reason:)``
    /// naming it, before anything would start the group.
    static func checkLoopSetting(_ environment: [String: String]) throws {
        do {
            _ = try EventLoops.loopCount(environment: environment)
        } catch let e as EventLoopSettingError {
            throw CacheError.invalidSetting(alias: "(all)", field: e.name, reason: "\(e.reason), got \"\(e.value)\"")
        }
    }

    /// The cache registered as `alias`; ``CacheError/unknownAlias(_:known:)`` when there is none.
    public subscript(alias: String) -> Cache {
        get throws {
            guard let c = caches[alias] else { throw CacheError.unknownAlias(alias, known: aliases) }
            return c
        }
    }

    /// The `default` cache (always configured).
    public var `default`: Cache {
        // The initialiser refuses settings without "default", so this lookup cannot fail.
        caches["default"]!
    }

    /// Every configured alias, sorted.
    public var aliases: [String] { caches.keys.sorted() }

    /// Closes every cache's connections (the caches stay usable and reconnect): for code without a
    /// service group, at the end of a request or a job, as Django closes its caches.
    public func closeAll() {
        for c in caches.values { c.close() }
    }

    /// Shuts every cache down gracefully and together (see ``Cache/shutdown(gracePeriod:)``): new
    /// calls fail at once with ``CacheError/shutDown(_:)``, calls in flight get `gracePeriod` to
    /// finish, then connections are closed and the backends' threads end. Returns the calls that were
    /// still in flight when the grace period ended, per alias (0 when all finished).
    @discardableResult
    public func shutdown(gracePeriod: Duration = .seconds(10)) async -> [String: Int] {
        await withTaskGroup(of: (String, Int).self) { group in
            for (alias, cache) in caches {
                group.addTask { (alias, await cache.shutdown(gracePeriod: gracePeriod)) }
            }
            var left: [String: Int] = [:]
            for await (alias, n) in group { left[alias] = n }
            return left
        }
    }
}

extension Caches: Service {
    /// Runs until the service group's graceful shutdown (or the task's cancellation), then shuts every
    /// cache down with ``shutdown(gracePeriod:)`` (10 s grace). The caches work whether or not this
    /// ever runs: it only decides when they stop. In a `ServiceGroup`, list the caches after the loop
    /// they use and before the services that use them: a group shuts its services down in reverse
    /// order, so the views stop first, then the caches drain, then the loop ends.
    public func run() async throws {
        try? await gracefulShutdown()
        await shutdown()
    }
}
