import Foundation
import MetricsTestKit
import Tandem
import TandemTestSupport
import Testing
@_spi(Backend) import TandemCache

/// The alias/field of an invalidSetting error, or nil.
private func settingError(_ body: () throws -> Void) -> (alias: String, field: String, reason: String)? {
    do {
        try body()
        return nil
    } catch let error as CacheError where error.code == .invalidSetting {
        let (alias, field, reason) = (error.alias ?? "", error.field ?? "", error.reason ?? "")
        return (alias, field, reason)
    } catch {
        return ("?", "?", "\(error)")
    }
}

private func caches(json: String) throws -> Caches { try Caches(json: Data(json.utf8)) }

@Suite struct SettingsTests {
    @Test func noSettingsGivesLocMemDefault() async throws {
        let caches = try Caches()
        #expect(caches.aliases == ["default"])
        #expect(caches.default.backend is LocMemBackend)
        try await caches.default.async.set("k", "v")
        #expect(try await caches["default"].async.get("k") == "v")
    }

    @Test func swiftValues() throws {
        let caches = try Caches(settings: [
            "default": CacheSettings(backend: "locmem", location: ["swift-values"], timeout: .seconds(60), keyPrefix: "shop", version: 2),
            "null": CacheSettings(backend: "dummy"),
        ])
        #expect(caches.aliases == ["default", "null"])
        #expect(try caches["null"].backend is DummyBackend)
        #expect(caches.default.makeKey("cart") == "shop:2:cart")
        #expect(caches.settings["default"]?.timeout == .seconds(60))
    }

    @Test func unknownAliasNamesKnownOnes() throws {
        let caches = try Caches()
        #expect(throws: CacheError.unknownAlias("sessions", known: ["default"])) { try caches["sessions"] }
        #expect(CacheError.unknownAlias("sessions", known: ["default"]).description.contains("sessions"))
    }

    @Test func jsonInDjangoShape() throws {
        let c = try caches(json: """
            {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "json-shape",
                         "TIMEOUT": 60, "KEY_PREFIX": "p", "VERSION": 3, "OPTIONS": {"MAX_ENTRIES": 10, "CULL_FREQUENCY": 2}},
             "forever": {"BACKEND": "locmem", "TIMEOUT": null},
             "dummy": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
            """)
        let backend = try #require(c.default.backend as? LocMemBackend)
        #expect(backend.location == "json-shape")
        #expect(backend.maxEntries == 10)
        #expect(backend.cullFrequency == 2)
        #expect(c.default.makeKey("k") == "p:3:k")
        #expect(c.settings["forever"]?.timeout == .never)
        #expect(try c["dummy"].backend is DummyBackend)
    }

    @Test func locationForms() throws {
        let parsed = try Caches.parseJSON(Data("""
            {"a": {"BACKEND": "locmem", "LOCATION": "h1:1; h2:2 ,h3:3"},
             "b": {"BACKEND": "locmem", "LOCATION": ["h1:1", "h2:2"]},
             "default": {"BACKEND": "locmem"}}
            """.utf8))
        #expect(parsed["a"]?.location == ["h1:1", "h2:2", "h3:3"])
        #expect(parsed["b"]?.location == ["h1:1", "h2:2"])
        #expect(parsed["default"]?.location == [])
    }

    @Test func sameLocationSharesDifferentIsolates() async throws {
        let c = try Caches(settings: [
            "default": CacheSettings(location: ["shared-A"]),
            "twin": CacheSettings(location: ["shared-A"]),
            "other": CacheSettings(location: ["shared-B"]),
        ])
        try await c.default.async.set("k", "v")
        #expect(try await c["twin"].async.get("k") == "v")
        #expect(try await c["other"].async.get("k") as String? == nil)
    }

    @Test func badSettingsNameAliasAndField() throws {
        let cases: [(String, String, String)] = [
            (#"{"default": {"BACKEND": "locmem", "TIMEOUT": "300"}}"#, "default", "TIMEOUT"),
            (#"{"default": {"BACKEND": "locmem", "TIMEOUT": true}}"#, "default", "TIMEOUT"),
            (#"{"default": {"BACKEND": "locmem", "VERSION": "1"}}"#, "default", "VERSION"),
            (#"{"default": {"BACKEND": "locmem", "VERSION": 1.5}}"#, "default", "VERSION"),
            (#"{"default": {"BACKEND": "locmem", "LOCATION": 5}}"#, "default", "LOCATION"),
            (#"{"default": {"BACKEND": "locmem", "LOCATION": ["a", 1]}}"#, "default", "LOCATION"),
            (#"{"default": {"BACKEND": "locmem", "OPTIONS": {"MAX_ENTRYS": 3}}}"#, "default", "OPTIONS.MAX_ENTRYS"),
            (#"{"default": {"BACKEND": "locmem", "OPTIONS": {"MAX_ENTRIES": "many"}}}"#, "default", "OPTIONS.MAX_ENTRIES"),
            (#"{"default": {"BACKEND": "locmem", "OPTIONS": {"MAX_ENTRIES": 0}}}"#, "default", "OPTIONS.MAX_ENTRIES"),
            (#"{"default": {"BACKEND": "locmem", "OPTIONS": {"CULL_FREQUENCY": -1}}}"#, "default", "OPTIONS.CULL_FREQUENCY"),
            (#"{"default": {"BACKEND": "locmem", "OPTIONS": {"ASYNC_UNSAFE": "sometimes"}}}"#, "default", "OPTIONS.ASYNC_UNSAFE"),
            (#"{"default": {"BACKEND": "locmem", "OPTIONS": []}}"#, "default", "OPTIONS"),
            (#"{"default": {"BACKEND": "locmem", "TIMEOUTS": 3}}"#, "default", "TIMEOUTS"),
            (#"{"default": {"BACKEND": "locmem", "KEY_FUNCTION": "x.y"}}"#, "default", "KEY_FUNCTION"),
            (#"{"default": {"BACKEND": "locmem", "KEY_PREFIX": 7}}"#, "default", "KEY_PREFIX"),
            (#"{"default": {"LOCATION": "x"}}"#, "default", "BACKEND"),
            (#"{"default": {"BACKEND": 3}}"#, "default", "BACKEND"),
            (#"{"default": "locmem"}"#, "default", "(entry)"),
            (#"{"sessions": {"BACKEND": "locmem"}}"#, "default", "(entry)"),
            (#"{"default": {"BACKEND": "locmem"}, "#, "(all)", "(json)"),
            (#"[1, 2]"#, "(all)", "(json)"),
        ]
        for (json, alias, field) in cases {
            let e = settingError { _ = try caches(json: json) }
            #expect(e?.alias == alias && e?.field == field, "\(json) -> \(String(describing: e))")
        }
    }

    @Test func unknownBackendListsKnownOnes() throws {
        do {
            _ = try caches(json: #"{"default": {"BACKEND": "mongo"}}"#)
            Issue.record("expected an error")
        } catch let e as CacheError {
            guard e.code == .unknownBackend, let alias = e.alias, let backend = e.backend else {
                Issue.record("wrong error \(e)")
                return
            }
            #expect(alias == "default" && backend == "mongo")
            #expect(e.known.contains("locmem") && e.known.contains("dummy"))
            #expect(e.description.contains("locmem"))
        }
    }

    @Test func environmentForms() throws {
        let json = try Caches.fromEnvironment(["TANDEM_CACHES": #"{"default": {"BACKEND": "dummy"}}"#])
        #expect(json.default.backend is DummyBackend)

        let url = try Caches.fromEnvironment(["TANDEM_CACHE_URL": "locmem://env-store?timeout=60&key_prefix=app&version=4&max_entries=30"])
        let lm = try #require(url.default.backend as? LocMemBackend)
        #expect(lm.location == "env-store" && lm.maxEntries == 30)
        #expect(url.default.makeKey("k") == "app:4:k")
        #expect(url.settings["default"]?.timeout == .seconds(60))

        #expect(try Caches.fromEnvironment(["TANDEM_CACHE_URL": "dummy://"]).default.backend is DummyBackend)
        #expect(try Caches.fromEnvironment([:]).default.backend is LocMemBackend)
        #expect(try Caches.fromEnvironment(["TANDEM_CACHE_URL": "locmem://x?timeout=none"]).settings["default"]?.timeout == .never)

        let redis = try CacheSettings(url: "redis://u:secret@127.0.0.1:6379/2?timeout=5")
        #expect(redis.backend == "redis" && redis.location == ["redis://u:secret@127.0.0.1:6379/2"] && redis.timeout == .seconds(5))
        let mc = try CacheSettings(url: "memcached://127.0.0.1:11211,127.0.0.1:11212")
        #expect(mc.backend == "memcached" && mc.location == ["127.0.0.1:11211", "127.0.0.1:11212"])

        #expect(settingError { _ = try Caches.fromEnvironment(["TANDEM_CACHE_URL": "mongo://x"]) }?.field == "TANDEM_CACHE_URL")
        for bad in ["0", "many", "300"] {
            let e = settingError { _ = try Caches.fromEnvironment(["TANDEM_EVENT_LOOPS": bad]) }
            #expect(e?.field == "TANDEM_EVENT_LOOPS" && e?.reason.contains("\"\(bad)\"") == true, "\(String(describing: e))")
        }
        #expect(try Caches.fromEnvironment(["TANDEM_EVENT_LOOPS": "3"]).default.backend is LocMemBackend)
        #expect(settingError { _ = try Caches.fromEnvironment(["TANDEM_CACHE_URL": "no-scheme"]) }?.field == "TANDEM_CACHE_URL")
        #expect(settingError { _ = try Caches.fromEnvironment(["TANDEM_CACHE_URL": "locmem://x?version=two"]) }?.field == "VERSION")
        #expect(settingError { _ = try Caches.fromEnvironment(["TANDEM_CACHE_URL": "locmem://x?timeout=soon"]) }?.field == "TIMEOUT")
        #expect(settingError { _ = try Caches.fromEnvironment(["TANDEM_CACHES": "{not json"]) }?.field == "(json)")
    }

    @Test func secretsAreRedacted() throws {
        let s = CacheSettings(backend: "redis", location: ["redis://app:hunter2@127.0.0.1:6379/0"],
                              options: ["PASSWORD": "hunter2", "DB": 1])
        #expect(!s.description.contains("hunter2"))
        #expect(s.description.contains("app:***@127.0.0.1"))
        #expect(Redaction.location("redis://:pw@h:1") == "redis://:***@h:1")
        #expect(Redaction.location("redis://h:1/0") == "redis://h:1/0")
        let e = settingError { _ = try CacheSettings(url: "mongo://u:hunter2@h") }
        #expect(e != nil && !(e?.reason.contains("hunter2") ?? true))
    }

    @Test func metricsAreRecordedPerAlias() async throws {
        let metrics = TestMetrics()
        let caches = try Caches(settings: [
            "default": CacheSettings(location: ["metrics-\(UUID())"], metricsFactory: metrics)
        ])
        let c = caches.default
        try await onPlainThread {
            try c.set("a", 1)
            _ = try c.get("a") as Int?
            _ = try c.get("missing") as Int?
        }
        _ = try await c.async.get("a") as Int?
        try await onPlainThread {
            _ = try? c.incr("missing")
            try c.delete("a")
        }
        let hits = try metrics.expectCounter("tandem_cache_hits_total", [("alias", "default")])
        let misses = try metrics.expectCounter("tandem_cache_misses_total", [("alias", "default")])
        let sets = try metrics.expectCounter("tandem_cache_sets_total", [("alias", "default")])
        let errors = try metrics.expectCounter("tandem_cache_errors_total", [("alias", "default")])
        let deletes = try metrics.expectCounter("tandem_cache_deletes_total", [("alias", "default")])
        #expect(hits.totalValue == 2)
        #expect(misses.totalValue == 1)
        #expect(sets.totalValue == 1)
        #expect(errors.totalValue == 1)
        #expect(deletes.totalValue == 1)
        let timer = try metrics.expectTimer("tandem_cache_duration", [("alias", "default"), ("op", "get")])
        #expect(timer.values.count == 3)
    }
}
