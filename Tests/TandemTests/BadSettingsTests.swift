import Foundation
import Tandem
import TandemTestSupport
import Testing

/// Malformed settings through the public entry points (`CacheSettings(url:)`, `Caches.fromEnvironment`,
/// `Caches(json:)`): each ends in a typed error or a working cache, never a crash or a hang.
@Suite struct BadSettingsTests {
    /// What one input led to.
    enum Outcome: Equatable {
        case refused(field: String)
        case otherCacheError(String)
        case working
    }

    /// Builds the caches from the environment `env` and, if that works, makes one call of each face
    /// (the servers named are loopback ports where nothing listens, so I/O fails fast and typed).
    static func outcome(env: [String: String]) async -> Outcome {
        let caches: Caches
        do {
            caches = try Caches.fromEnvironment(env)
        } catch let error as CacheError where error.code == .invalidSetting {
            let field = error.field ?? ""
            return .refused(field: field)
        } catch let error as CacheError where error.code == .unknownBackend {
            return .refused(field: "BACKEND")
        } catch {
            Issue.record("\(env): an error that is not a CacheError: \(type(of: error)) \(error)")
            return .otherCacheError("\(error)")
        }
        defer { caches.closeAll() }
        for alias in caches.aliases {
            do {
                let cache = try caches[alias]
                try await cache.async.set("probe", "v", timeout: .seconds(5))
                _ = try await cache.async.get("probe") as String?
            } catch let e as CacheError {
                switch e.code {
                case .connectionFailed, .timeout, .serverError, .authenticationFailed, .poolExhausted: continue
                default: return .otherCacheError("\(e)")
                }
            } catch {
                Issue.record("\(env): a call failed with an untyped error: \(error)")
            }
        }
        return .working
    }

    static func url(_ u: String) async -> Outcome { await outcome(env: ["TANDEM_CACHE_URL": u]) }

    @Test(.timeLimit(.minutes(3)))
    func emptyAndMalformedQueryItemsAreRefusedNamingTheURL() async throws {
        // Each of these used to kill the process ("Index out of range").
        for base in ["locmem://x", "redis://127.0.0.1:1/0", "memcached://127.0.0.1:1", "dummy://", "unix:///tmp/tandem-no.sock"] {
            for query in ["?=", "?=1", "?a=1&=2", "?key_prefix=a&key_prefix=b", "?%zz=1", "?timeout=%G1"] {
                let o = await BadSettingsTests.url(base + query)
                #expect(o == .refused(field: "TANDEM_CACHE_URL"), "\(base + query): \(o)")
            }
            // An empty query or empty items are no parameters at all: a working cache.
            for query in ["?", "?&", "?&&"] {
                let o = await BadSettingsTests.url(base + query)
                #expect(o == .working, "\(base + query): \(o)")
            }
        }
    }

    @Test func unknownURLParametersAndOptionsAreRefusedOnEveryBackend() async throws {
        for base in ["locmem://x", "redis://127.0.0.1:1/0", "memcached://127.0.0.1:1"] {
            let o = await BadSettingsTests.url(base + "?bogus=1")
            #expect(o == .refused(field: "OPTIONS.BOGUS"), "\(base): \(o)")
        }
        // Asking for TLS on a plain location, or with another client's words, never falls back to plain text.
        for url in ["redis://127.0.0.1:1/0?tls=1", "redis://127.0.0.1:1/0?ssl=true", "redis://127.0.0.1:1/0?ssl_cert_reqs=required",
                    "rediss://127.0.0.1:1/0?ssl_cert_reqs=optional"] {
            let o = await BadSettingsTests.url(url)
            guard case .refused = o else { Issue.record("\(url) was accepted: \(o)"); continue }
        }
        // The same through a LOCATION in JSON settings (where no URL-to-OPTIONS mapping happens).
        for location in ["redis://127.0.0.1:1/0?bogus=1", "redis://127.0.0.1:1/0?tls=1", "redis://127.0.0.1:1?db=1&ssl=1"] {
            let json = #"{"default": {"BACKEND": "redis", "LOCATION": "\#(location)"}}"#
            do {
                _ = try Caches(json: Data(json.utf8))
                Issue.record("\(location) was accepted")
            } catch let error as CacheError where error.code == .invalidSetting {
                let (field, reason) = (error.field ?? "", error.reason ?? "")
                #expect(field == "LOCATION")
                let name = location.contains("bogus") ? "bogus" : location.contains("tls") ? "tls" : "ssl"
                #expect(reason.contains("'\(name)'"), "the reason names the parameter: \(reason)")
            }
        }
        // Known options still work as URL parameters.
        let s = try CacheSettings(url: "redis://127.0.0.1:1/3?connect_timeout=0.25&key_prefix=p")
        #expect(s.options["CONNECT_TIMEOUT"] == .double(0.25) && s.keyPrefix == "p" && s.location == ["redis://127.0.0.1:1/3"])
    }

    @Test(.timeLimit(.minutes(3)))
    func fixedListOfMalformedURLs() async throws {
        // (url, must it be refused?)
        let cases: [(String, Bool)] = [
            ("redis://127.0.0.1:0", true), ("redis://127.0.0.1:65536", true), ("redis://127.0.0.1:-1", true),
            ("redis://127.0.0.1:99999999999999999999", true), ("redis://127.0.0.1:", true), ("redis://127.0.0.1:1/abc", true),
            ("redis://127.0.0.1:1/-3", true), ("redis://127.0.0.1:1/99999999999", true), ("redis://127.0.0.1:1/1?db=", true),
            ("redis://127.0.0.1:1?db=-1", true), ("redis://[::1:1", true), ("redis://[]:1", true), ("redis://a[b]:1", true),
            ("redis://127.0.0.1\u{0}:1", true), ("redis://127.0.0.1\n:1", true), ("redis://127 .0.0.1:1", true),
            ("redis://:1", true), ("redis://", true), ("redis:///0", true), ("redis://u:p@", true),
            ("memcached://127.0.0.1:0", true), ("memcached://127.0.0.1:70000", true), ("memcached://h\u{7}st:1", true),
            ("memcached://[::1:1", true), ("memcached://", true), ("memcached://,,", true), ("memcached://127.0.0.1:x", true),
            ("locmem://x?timeout=soon", true), ("locmem://x?timeout=nan", true), ("locmem://x?timeout=inf", true),
            ("locmem://x?version=1.5", true), ("locmem://x?max_entries=0", true), ("locmem://x?cull_frequency=-1", true),
            ("mongo://x", true), ("redis:/127.0.0.1:1", true), ("", false), ("://", true),
            ("redis://[::1]:1/0", false), ("memcached://[::1]:1", true), ("locmem://?timeout=none", false),
        ]
        for (url, mustRefuse) in cases {
            let o = await BadSettingsTests.url(url)
            if mustRefuse {
                guard case .refused = o else { Issue.record("\(url.debugDescription) was not refused: \(o)"); continue }
            } else {
                #expect(o == .working, "\(url.debugDescription): \(o)")
            }
        }
    }

    @Test func anUnknownSerializerIsRefusedAndDjangosIsAcceptedOnEveryBackend() async throws {
        for base in ["locmem://x", "redis://127.0.0.1:1/0", "memcached://127.0.0.1:1", "dummy://"] {
            for bad in ["pickle", "msgpack", ""] {
                let o = await BadSettingsTests.url(base + "?serializer=" + bad)
                #expect(o == .refused(field: "OPTIONS.SERIALIZER"), "\(base) \(bad): \(o)")
            }
            for good in ["django", "tandem", "DJANGO", "json"] {
                let o = await BadSettingsTests.url(base + "?serializer=" + good)
                #expect(o == .working, "\(base) \(good): \(o)")
            }
            for bad in ["brotli", "", "zlib6"] {
                let o = await BadSettingsTests.url(base + "?compressor=" + bad)
                #expect(o == .refused(field: "OPTIONS.COMPRESSOR"), "\(base) \(bad): \(o)")
            }
            let o = await BadSettingsTests.url(base + "?serializer=django&compressor=zstd")
            #expect(o == .working, "\(base): \(o)")
        }
        // The django format round-trips on the embedded default too.
        let caches = try Caches(settings: ["default": CacheSettings(backend: "locmem", options: ["SERIALIZER": "django"])])
        defer { caches.closeAll() }
        try await caches.default.async.set("d", ["a": [1, 2]])
        #expect(try await caches.default.async.get("d") as [String: [Int]]? == ["a": [1, 2]])
        try await caches.default.async.set("n", 5)
        #expect(try await caches.default.async.incr("n") == 6)
        // Tandem's own format compressed: long values shrink, integers stay text, both read back.
        let packed = try Caches(settings: ["default": CacheSettings(backend: "locmem", options: ["COMPRESSOR": "zlib"])])
        defer { packed.closeAll() }
        let long = String(repeating: "tandem ", count: 100)
        try await packed.default.async.set("t", long)
        try await packed.default.async.set("i", 12_345_678_901_234_567)
        #expect(try await packed.default.async.get("t") as String? == long)
        #expect(try await packed.default.async.incr("i") == 12_345_678_901_234_568)
    }

    @Test func malformedCachesJSON() async throws {
        let bad: [String] = [
            #"[]"#, #"{"default": []}"#, #"{"default": {"BACKEND": 1}}"#, #"{"default": {"BACKEND": null}}"#,
            #"{"default": {"BACKEND": "locmem", "TIMEOUT": "60"}}"#, #"{"default": {"BACKEND": "locmem", "TIMEOUT": 1e400}}"#,
            #"{"default": {"BACKEND": "locmem", "VERSION": 1.5}}"#, #"{"default": {"BACKEND": "locmem", "VERSION": 99999999999999999999999}}"#,
            #"{"default": {"BACKEND": "locmem", "OPTIONS": {"MAX_ENTRIES": -5}}}"#,
            #"{"default": {"BACKEND": "locmem", "OPTIONS": {"MAX_ENTRIES": 1e30}}}"#,
            #"{"default": {"BACKEND": "locmem", "OPTIONS": []}}"#, #"{"default": {"BACKEND": "locmem", "KEY_PREFIX": 7}}"#,
            #"{"default": {"BACKEND": "redis", "LOCATION": []}}"#, #"{"default": {"BACKEND": "redis", "LOCATION": [1]}}"#,
            #"{"default": {"BACKEND": "redis", "LOCATION": ""}}"#, #"{"default": {"BACKEND": "memcached", "LOCATION": [""]}}"#,
            #"{"default": {"BACKEND": "memcached", "LOCATION": {}}}"#,
            #"{"default": {"BACKEND": "redis", "LOCATION": "redis://127.0.0.1:1", "OPTIONS": {"COMMAND_TIMEOUT": -1}}}"#,
            #"{"default": {"BACKEND": "redis", "LOCATION": "redis://127.0.0.1:1", "OPTIONS": {"POOL_SIZE": 9223372036854775807}}}"#,
            #"{"default": {"BACKEND": "redis", "LOCATION": "redis://127.0.0.1:1", "OPTIONS": {"CONNECT_TIMEOUT": 1e308}}}"#,
            #"{"other": {"BACKEND": "locmem"}}"#, #"{"default": {"BACKEND": "locmem", "EXTRA": 1}}"#, #"{"default": "#, "",
            #"{"default": {"BACKEND": "nosuch"}}"#,
        ]
        for json in bad {
            let o = await BadSettingsTests.outcome(env: ["TANDEM_CACHES": json])
            if json.isEmpty {
                #expect(o == .working, "an empty TANDEM_CACHES means no settings")
            } else {
                guard case .refused = o else { Issue.record("\(json) was not refused: \(o)"); continue }
            }
        }
    }

    /// At least a hundred mutations of valid URLs, made by a seeded generator so every run tries the same.
    @Test(.timeLimit(.minutes(2)))
    func seededMutationsOfValidURLs() async throws {
        let valid = ["locmem://shop?timeout=60&key_prefix=p&version=2", "dummy://", "redis://127.0.0.1:1/3",
                     "redis://user:pw@127.0.0.1:1/0?key_prefix=k", "redis://[::1]:1/0", "unix:///tmp/tandem-none.sock?db=2",
                     "memcached://127.0.0.1:1,127.0.0.1:2", "memcached://127.0.0.1:1?key_prefix=m&timeout=5"]
        let alphabet = Array("?=&%[]:/@,;.#\u{0}\n\r\t -_09azAZ~\u{7f}é".unicodeScalars)
        var rng = SplitMix64(seed: 0x7A4D_E412)
        var counts: [String: Int] = [:]
        for i in 0..<240 {
            var s = Array(valid[i % valid.count].unicodeScalars)
            for _ in 0..<(1 + Int(rng.next() % 3)) {
                let at = s.isEmpty ? 0 : Int(rng.next() % UInt64(s.count))
                let c = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                switch rng.next() % 4 {
                case 0: s.insert(c, at: at)
                case 1: if !s.isEmpty { s.remove(at: at) }
                case 2: if !s.isEmpty { s[at] = c }
                default: s.insert(contentsOf: s[at...].prefix(4), at: at)
                }
            }
            var text = ""
            text.unicodeScalars.append(contentsOf: s)
            let o = await BadSettingsTests.url(text)
            switch o {
            case .refused: counts["refused", default: 0] += 1
            case .working: counts["working", default: 0] += 1
            case .otherCacheError(let e): Issue.record("\(text.debugDescription): a built cache failed with \(e)")
            }
        }
        print("BAD-SETTINGS seeded mutations: \(counts.sorted { $0.key < $1.key })")
        #expect(counts.values.reduce(0, +) == 240)
        #expect(counts["refused", default: 0] > 0 && counts["working", default: 0] > 0, "\(counts)")
    }
}
