import Configuration
import Foundation
import Tandem
@_spi(Backend) import TandemCache

extension Caches {
    /// Builds the registry from apple/swift-configuration (environment variables, JSON or YAML files,
    /// command-line arguments, in-memory values, or any provider stack).
    ///
    /// Keys (shown dotted; the environment provider maps `caches.default.backend` to
    /// `CACHES_DEFAULT_BACKEND`):
    /// - `caches.aliases`: the aliases to build (a string array; default `["default"]`);
    /// - per alias: `caches.<alias>.backend` (required), `.location` (a string array, or one string
    ///   split on `;` or `,`), `.timeout` (seconds, or `none` for never), `.key_prefix`, `.version`, and
    ///   `.options.<name>` for each option the backend understands (lower case, e.g.
    ///   `caches.default.options.max_entries`).
    ///
    /// Values of the wrong type are errors naming the alias and field, as with the other forms.
    public convenience init(configReader config: ConfigReader, loop: (any TandemEventLoop)? = nil, registry: BackendRegistry = .standard) throws {
        let aliases = config.stringArray(forKey: ConfigKey(["caches", "aliases"])) ?? ["default"]
        var settings: [String: CacheSettings] = [:]
        for alias in aliases {
            settings[alias] = try CacheSettings(configReader: config.scoped(to: ConfigKey(["caches", alias])), alias: alias, registry: registry)
        }
        try self.init(settings: settings, loop: loop, registry: registry)
    }
}

extension CacheSettings {
    /// Reads one alias's settings from a reader scoped to `caches.<alias>`; see `Caches(configReader:)`.
    public init(configReader c: ConfigReader, alias: String, registry: BackendRegistry = .standard) throws {
        func present(_ key: String) -> Bool { c.string(forKey: ConfigKey(key)) != nil || c.int(forKey: ConfigKey(key)) != nil
            || c.double(forKey: ConfigKey(key)) != nil || c.bool(forKey: ConfigKey(key)) != nil || c.stringArray(forKey: ConfigKey(key)) != nil }
        func bad(_ field: String, _ reason: String) -> CacheError { .invalidSetting(alias: alias, field: field, reason: reason) }

        guard let backend = c.string(forKey: "backend") else {
            throw bad("BACKEND", present("backend") ? "expected a string" : "missing (caches.\(alias).backend)")
        }
        self.init(backend: backend)
        if let list = c.stringArray(forKey: "location") {
            location = list
        } else if let one = c.string(forKey: "location") {
            location = CacheSettings.splitLocation(one)
        } else if present("location") {
            throw bad("LOCATION", "expected a string or a list of strings")
        }
        if let seconds = c.int(forKey: "timeout") {
            timeout = .seconds(Double(seconds))
        } else if let seconds = c.double(forKey: "timeout") {
            timeout = .seconds(seconds)
        } else if let text = c.string(forKey: "timeout") {
            guard ["none", "null", "never"].contains(text.lowercased()) else {
                throw bad("TIMEOUT", "expected a number of seconds or none, got \"\(text)\"")
            }
            timeout = .never
        }
        if let prefix = c.string(forKey: "key_prefix") { keyPrefix = prefix }
        if let v = c.int(forKey: "version") {
            version = v
        } else if present("version") {
            throw bad("VERSION", "expected an integer")
        }
        guard let entry = registry.entry(named: backend) else {
            throw CacheError.unknownBackend(alias: alias, backend: backend, known: registry.knownNames)
        }
        for name in entry.optionNames.union(BackendRegistry.frontOptions) {
            let key = ConfigKey(["options", name.lowercased()])
            let secret = Redaction.isSecret(name)
            if let i = c.int(forKey: key) {
                options[name] = .int(i)
            } else if let d = c.double(forKey: key) {
                options[name] = .double(d)
            } else if let b = c.bool(forKey: key) {
                options[name] = .bool(b)
            } else if let s = c.string(forKey: key, isSecret: secret) {
                options[name] = SettingValue.inferred(from: s)
                if secret { options[name] = .string(s) }
            }
        }
    }
}
