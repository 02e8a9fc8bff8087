import Tandem
@_spi(Backend) import TandemCache

/// A cache on the standard backends for a test that names its own server: `options` over generous
/// timeouts for Redis (a sanitizer run on two cores is slow; a test about something else should not
/// fail on a 1 s default), on `loop` (nil: the process-wide loop group).
public func testCache(_ backend: String, _ location: [String], options: [String: SettingValue] = [:], keyPrefix: String = "",
                      alias: String = "test", loop: TestLoops.Kind? = .epoll) throws -> Cache {
    var o: [String: SettingValue] = backend == "redis" ? ["CONNECT_TIMEOUT": 10, "COMMAND_TIMEOUT": 10] : [:]
    o.merge(options) { _, mine in mine }
    return try BackendRegistry.standard.makeCache(
        alias: alias, settings: CacheSettings(backend: backend, location: location, keyPrefix: keyPrefix, options: o), loop: loop?.loop)
}
