import Configuration
import Tandem
import TandemConfiguration
import Testing
@_spi(Backend) import TandemCache

@Suite struct ConfigReaderTests {
    @Test func cachesFromSwiftConfiguration() throws {
        let reader = ConfigReader(provider: InMemoryProvider(values: [
            "caches.aliases": .init(.stringArray(["default", "null"]), isSecret: false),
            "caches.default.backend": "django.core.cache.backends.locmem.LocMemCache",
            "caches.default.location": "config-reader",
            "caches.default.timeout": 60,
            "caches.default.key_prefix": "cfg",
            "caches.default.version": 3,
            "caches.default.options.max_entries": 42,
            "caches.null.backend": "dummy",
        ]))
        let caches = try Caches(configReader: reader)
        #expect(caches.aliases == ["default", "null"])
        let lm = try #require(caches.default.backend as? LocMemBackend)
        #expect(lm.location == "config-reader" && lm.maxEntries == 42)
        #expect(caches.default.makeKey("k") == "cfg:3:k")
        #expect(caches.settings["default"]?.timeout == .seconds(60))
        #expect(try caches["null"].backend is DummyBackend)
    }

    @Test func badValuesNameTheField() throws {
        func field(_ values: [AbsoluteConfigKey: ConfigValue]) -> String? {
            do {
                _ = try Caches(configReader: ConfigReader(provider: InMemoryProvider(values: values)))
                return nil
            } catch let error as CacheError where error.code == .invalidSetting {
                let field = error.field ?? ""
                return field
            } catch {
                return "\(error)"
            }
        }
        #expect(field(["caches.default.backend": "locmem", "caches.default.version": "three"]) == "VERSION")
        #expect(field(["caches.default.backend": "locmem", "caches.default.timeout": "soon"]) == "TIMEOUT")
        #expect(field(["caches.default.location": "x"]) == "BACKEND")
        #expect(field(["caches.default.backend": "locmem", "caches.default.options.max_entries": 0]) == "OPTIONS.MAX_ENTRIES")
    }
}
