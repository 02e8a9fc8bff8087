import Foundation
import Tandem
import TandemTestSupport
import Testing
@_spi(Backend) import TandemCache

private let tlsServersAvailable = TestServers.shouldRun(TestServers.redisTLSURL != nil)

/// What goes wrong with TLS is a typed error that says what, in both faces; nothing falls back to
/// plain text.
@Suite(.enabled(if: tlsServersAvailable, Comment(rawValue: TestServers.skipMessage)))
struct RedisTLSTests {
    static var dir: String { TestServers.tlsDirectory ?? "/nonexistent" }

    /// A cache on `location` (a short connect timeout: every server here is local).
    static func cache(_ location: String, _ options: [String: SettingValue] = [:], loop: TestLoops.Kind = .epoll) throws -> Cache {
        try testCache("redis", [location], options: options, alias: "tls-test", loop: loop)
    }

    /// The error a `set` then a `get` give through `face` (nil when both succeed and agree).
    static func failure(_ cache: Cache, _ face: FaceKind) async -> CacheError? {
        let f = Face(cache, face)
        do {
            try await f.set("tls-key", "secret value")
            #expect(try await f.get("tls-key", as: String.self) == "secret value")
            return nil
        } catch let e as CacheError {
            return e
        } catch {
            Issue.record("not a CacheError: \(error)")
            return nil
        }
    }

    @Test(arguments: FaceKind.allCases, TestLoops.Kind.allCases)
    func aServerFromAnotherCAIsNotTrusted(_ face: FaceKind, _ loop: TestLoops.Kind) async throws {
        let url = try TestServers.need(TestServers.redisTLSURL, "redis-server with TLS")
        let e = await Self.failure(try Self.cache(url, ["SSL_CA_CERTS": .string(Self.dir + "/other-ca.pem")], loop: loop), face)
        guard let failure = e?.tlsFailure, failure.code == .untrustedPeer else { Issue.record("expected untrustedPeer, got \(String(describing: e))"); return }
        #expect(failure.reason.contains("certificate"), Comment(rawValue: failure.reason))
    }

    @Test(arguments: FaceKind.allCases, TestLoops.Kind.allCases)
    func aCertificateForAnotherNameIsRefused(_ face: FaceKind, _ loop: TestLoops.Kind) async throws {
        // The server's certificate names localhost only; connect to the same server as 127.0.0.1.
        let url = try TestServers.need(TestServers.redisTLSURL, "redis-server with TLS")
        let (_, port) = try #require(TestServers.hostPort(url))
        let e = await Self.failure(try Self.cache("rediss://127.0.0.1:\(port)", ["SSL_CA_CERTS": .string(Self.dir + "/ca.pem")], loop: loop), face)
        guard e?.tlsFailure?.code == .nameMismatch else { Issue.record("expected nameMismatch, got \(String(describing: e))"); return }
    }

    @Test(arguments: FaceKind.allCases, TestLoops.Kind.allCases)
    func aPlainTextServerOnTheTLSPortFailsTheHandshake(_ face: FaceKind, _ loop: TestLoops.Kind) async throws {
        let plain = try TestServers.need(TestServers.redisURL, "redis-server")
        let (_, port) = try #require(TestServers.hostPort(plain))
        // Redis waits for the end of a line that never comes: the handshake goes unanswered.
        let e = await Self.failure(try Self.cache("rediss://localhost:\(port)", ["SSL_CA_CERTS": .string(Self.dir + "/ca.pem"), "CONNECT_TIMEOUT": 1], loop: loop), face)
        guard let failure = e?.tlsFailure, failure.code == .handshakeFailed else { Issue.record("expected handshakeFailed, got \(String(describing: e))"); return }
        #expect(failure.reason.contains("speak TLS"), Comment(rawValue: failure.reason))
    }

    @Test(arguments: FaceKind.allCases, TestLoops.Kind.allCases)
    func mutualTLSNeedsTheClientCertificate(_ face: FaceKind, _ loop: TestLoops.Kind) async throws {
        let url = try TestServers.need(TestServers.redisMutualTLSURL, "redis-server with mutual TLS")
        let ca = "ssl_ca_certs=\(Self.dir)/ca.pem"
        let without = await Self.failure(try Self.cache("\(url)/0?\(ca)", loop: loop), face)
        guard without?.tlsFailure?.code == .handshakeFailed else {
            Issue.record("expected the server to refuse a client without a certificate, got \(String(describing: without))")
            return
        }
        let with = try Self.cache("\(url)/0?\(ca)&ssl_certfile=\(Self.dir)/client.pem&ssl_keyfile=\(Self.dir)/client.key", loop: loop)
        #expect(await Self.failure(with, face) == nil, "with the client certificate the calls go through")
    }

    /// redis-py's `ssl_check_hostname=false`: the chain is still checked, the name is not (issue 29).
    @Test(arguments: FaceKind.allCases, TestLoops.Kind.allCases)
    func hostnameCheckOffStillChecksTheChain(_ face: FaceKind, _ loop: TestLoops.Kind) async throws {
        let url = try TestServers.need(TestServers.redisTLSURL, "redis-server with TLS")
        let (_, port) = try #require(TestServers.hostPort(url))
        // The certificate names localhost only: by IP it is a mismatch, unless the name check is off.
        let byIP = "rediss://127.0.0.1:\(port)/4?ssl_ca_certs=\(Self.dir)/ca.pem"
        #expect(await Self.failure(try Self.cache(byIP + "&ssl_check_hostname=false", loop: loop), face) == nil)
        #expect(await Self.failure(try Self.cache(byIP, ["SSL_CHECK_HOSTNAME": false], loop: loop), face) == nil)
        guard (await Self.failure(try Self.cache(byIP + "&ssl_check_hostname=true", loop: loop), face))?.tlsFailure?.code == .nameMismatch else {
            Issue.record("ssl_check_hostname=true must check the name")
            return
        }
        // ... and a certificate from another CA is still refused.
        let otherCA = "rediss://127.0.0.1:\(port)/4?ssl_ca_certs=\(Self.dir)/other-ca.pem&ssl_check_hostname=false"
        guard (await Self.failure(try Self.cache(otherCA, loop: loop), face))?.tlsFailure?.code == .untrustedPeer else {
            Issue.record("the chain must still be checked with ssl_check_hostname=false")
            return
        }
    }

    @Test(arguments: FaceKind.allCases)
    func verificationOffStillEncryptsAndTalks(_ face: FaceKind) async throws {
        // ssl_cert_reqs=none: any certificate is taken (logged as a warning), the bytes are still TLS.
        let url = try TestServers.need(TestServers.redisTLSURL, "redis-server with TLS")
        let cache = try Self.cache("\(url)/3?ssl_cert_reqs=none")
        #expect(await Self.failure(cache, face) == nil)
        #expect(cache.backend.backendDescription.hasPrefix("rediss://"))
    }

    @Test func tlsSettingsAreCheckedWhenTheCacheIsBuilt() throws {
        func refused(_ location: String, _ options: [String: SettingValue] = [:]) -> String? {
            do {
                _ = try Self.cache(location, options)
                return nil
            } catch let e as CacheError {
                guard e.code == .invalidSetting else { return "not invalidSetting: \(e)" }
                return e.description
            } catch {
                return "\(error)"
            }
        }
        let missing = refused("rediss://localhost:1/0?ssl_ca_certs=/no/such/ca.pem")
        #expect(missing?.contains("/no/such/ca.pem") == true, Comment(rawValue: missing ?? "accepted"))
        let keyAlone = refused("rediss://localhost:1/0", ["SSL_KEYFILE": .string(Self.dir + "/client.key")])
        #expect(keyAlone?.contains("without a client certificate") == true, Comment(rawValue: keyAlone ?? "accepted"))
        let wrongKey = refused("rediss://localhost:1/0?ssl_certfile=\(Self.dir)/client.pem&ssl_keyfile=\(Self.dir)/redis.key")
        #expect(wrongKey?.contains("client key from \(Self.dir)/redis.key") == true, Comment(rawValue: wrongKey ?? "accepted"))
        let reqs = refused("rediss://localhost:1/0?ssl_cert_reqs=sometimes")
        #expect(reqs?.contains("ssl_cert_reqs") == true, Comment(rawValue: reqs ?? "accepted"))
        // A TLS setting on a plain location would be ignored and the bytes sent in clear: refused.
        let plainQuery = refused("redis://localhost:1/0?ssl_ca_certs=\(Self.dir)/ca.pem")
        #expect(plainQuery?.contains("not a rediss://") == true, Comment(rawValue: plainQuery ?? "accepted"))
        let plainOption = refused("redis://localhost:1/0", ["SSL_CERT_REQS": "none"])
        #expect(plainOption?.contains("OPTIONS.SSL_CERT_REQS") == true, Comment(rawValue: plainOption ?? "accepted"))
        #expect(refused("rediss://localhost:1/0?ssl=true")?.contains("rediss://") == true)
        let check = refused("rediss://localhost:1/0?ssl_check_hostname=maybe")
        #expect(check?.contains("ssl_check_hostname") == true, Comment(rawValue: check ?? "accepted"))
        let checkPlain = refused("redis://localhost:1/0", ["SSL_CHECK_HOSTNAME": false])
        #expect(checkPlain?.contains("OPTIONS.SSL_CHECK_HOSTNAME") == true, Comment(rawValue: checkPlain ?? "accepted"))
        #expect(refused("rediss://localhost:1/0", ["SSL_CHECK_HOSTNAME": 3])?.contains("SSL_CHECK_HOSTNAME") == true)
    }

    @Test func theCacheURLCarriesTLSSettingsAsOptions() async throws {
        let url = try TestServers.need(TestServers.redisTLSURL, "redis-server with TLS")
        var settings = try CacheSettings(url: "\(url)/5?ssl_ca_certs=\(Self.dir)/ca.pem")
        // The timeouts testCache gives every other Redis test here: under a sanitizer a TLS handshake
        // on a loop shared with every suite can take longer than the default second.
        settings.options["COMMAND_TIMEOUT"] = 10
        settings.options["CONNECT_TIMEOUT"] = 10
        let cache = try BackendRegistry.standard.makeCache(alias: "tls-url", settings: settings, loop: TestLoops.epoll)
        try await cache.async.set("via-url", 7)
        #expect(try await cache.async.get("via-url") == 7)
    }
}
