import Foundation
import Logging
import Synchronization
import Tandem
import TandemTestSupport
import Testing
@_spi(Backend) import TandemCache

/// Every log line of the process, captured at every level (and still printed at info and above).
final class LogCapture: Sendable {
    static let shared: LogCapture = {
        let capture = LogCapture()
        LoggingSystem.bootstrap { label in
            var stream = StreamLogHandler.standardError(label: label)
            stream.logLevel = .info
            return MultiplexLogHandler([stream, Handler(label: label, capture: capture)])
        }
        return capture
    }()

    private let lines = Mutex<[String]>([])
    var all: [String] { lines.locked { $0 } }

    struct Handler: LogHandler {
        let label: String
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(level: Logger.Level, message: Logger.Message, metadata extra: Logger.Metadata?,
                 source: String, file: String, function: String, line: UInt) {
            let all = metadata.merging(extra ?? [:]) { $1 }
            let text = "\(level) \(label): \(message) " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            capture.lines.locked { $0.append(text) }
        }
    }
}

extension Faults {
    @Suite struct Security {
        @Test(.timeLimit(.minutes(1)))
        func aclUsersAndPasswordsAreHonoured() async throws {
            let server = try await onPlainThread {
                try ServerProcess(.redis, extraArguments: ["--requirepass", "admin-pw",
                                                           "--user", "limited", "on", ">limited-pw", "~allowed:*", "+get", "+set", "+exists", "+ping"])
            }
            defer { server.stop() }
            func cache(_ url: String, prefix: String) throws -> Cache {
                try Caches(settings: ["default": CacheSettings(backend: "redis", location: [url], keyPrefix: prefix,
                                                               options: ["CONNECT_TIMEOUT": 1, "COMMAND_TIMEOUT": 1])]).default
            }
            let allowed = try cache("redis://limited:limited-pw@127.0.0.1:\(server.port)", prefix: "allowed")
            try await allowed.async.set("x", "ok")
            #expect(try await onPlainThread { try allowed.get("x") as String? } == "ok", "the ACL user reads and writes its keys")
            let outside = try cache("redis://limited:limited-pw@127.0.0.1:\(server.port)", prefix: "forbidden")
            var refusals: [String] = []
            for face in FaceKind.allCases {
                do {
                    switch face {
                    case .async: try await outside.async.set("x", "no")
                    case .blocking: try await onPlainThread { try outside.set("x", "no") }
                    }
                    Issue.record("\(face): the ACL let the user write outside its key pattern")
                } catch let e as CacheError {
                    guard e.code == .serverError, let message = e.reason, message.contains("NOPERM") else { Issue.record("expected NOPERM, got \(e)"); continue }
                    refusals.append("\(face) set outside ~allowed:*: \(message.prefix(40))")
                }
            }
            do {
                try await allowed.async.clear()
                Issue.record("the ACL let the user run FLUSHDB")
            } catch let e as CacheError {
                guard e.code == .serverError, let message = e.reason, message.contains("NOPERM") else { Issue.record("expected NOPERM, got \(e)"); return }
                refusals.append("FLUSHDB: \(message.prefix(40))")
            }
            let wrong = try cache("redis://limited:not-the-pw@127.0.0.1:\(server.port)", prefix: "allowed")
            let anonymous = try cache("redis://127.0.0.1:\(server.port)", prefix: "allowed")
            for (name, c) in [("wrong password", wrong), ("no password", anonymous)] {
                for face in FaceKind.allCases {
                    do {
                        switch face {
                        case .async: _ = try await c.async.get("x") as String?
                        case .blocking: _ = try await onPlainThread { try c.get("x") as String? }
                        }
                        Issue.record("\(name), \(face): read without valid credentials")
                    } catch let e as CacheError {
                        guard e.code == .authenticationFailed else { Issue.record("\(name), \(face): expected authenticationFailed, got \(e)"); continue }
                        #expect(!e.description.contains("not-the-pw"))
                        refusals.append("\(name) (\(face)): authenticationFailed")
                    }
                }
            }
            Figures.record("Redis AUTH and ACL", ["refusals": refusals])
        }

        /// What weakens security or loses a write is said in the log (issue 29): an upstream client
        /// without TLS verification, once per client; a write a fail-open cache did not apply, at
        /// warning, once per interval and operation however many there are.
        @Test(.timeLimit(.minutes(1)))
        func weakenedTLSAndSwallowedWritesAreLoggedAsWarnings() async throws {
            let logs = LogCapture.shared
            let before = logs.all.count
            var config = UpstreamClientConfiguration()
            config.verifyTLS = false
            let unverified = UpstreamClient(configuration: config)
            let alias = "swallowing-\(UUID().uuidString.prefix(8))"
            let cache = try Caches(settings: [
                "default": CacheSettings(backend: "locmem", location: [alias]),
                alias: CacheSettings(backend: "redis", location: ["redis://127.0.0.1:\(try freeLoopbackPort())/0"],
                                     options: ["IGNORE_EXCEPTIONS": true, "CONNECT_TIMEOUT": 0.5]),
            ])[alias]
            for _ in 0..<5 { try await cache.async.set("k", "v") }
            _ = try await cache.async.delete("k")
            await unverified.shutdown()
            let new = logs.all.dropFirst(before)
            #expect(new.filter { $0.hasPrefix("warning") && $0.contains("TLS verification is off") }.count == 1, "\(Array(new))")
            let swallowed = new.filter { $0.hasPrefix("warning") && $0.contains("cache=\(alias)") && $0.contains("was not applied") }
            #expect(swallowed.filter { $0.contains("op=set") }.count == 1, "five swallowed sets, one warning: \(swallowed)")
            #expect(swallowed.filter { $0.contains("op=delete") }.count == 1, "\(swallowed)")
        }

        @Test(.timeLimit(.minutes(1)))
        func secretsNeverAppearInLogsErrorsOrDescriptions() async throws {
            let logs = LogCapture.shared
            let secrets = ["hunter2-url", "hunter2-option", "hunter2-sasl"]
            let redis = try await onPlainThread { try ServerProcess(.redis, extraArguments: ["--requirepass", "right-pw"]) }
            defer { redis.stop() }
            let deadPort = try freeLoopbackPort()
            let settings: [String: CacheSettings] = [
                "default": CacheSettings(backend: "redis", location: ["redis://app:hunter2-url@127.0.0.1:\(redis.port)/0"],
                                         options: ["CONNECT_TIMEOUT": 0.5, "COMMAND_TIMEOUT": 0.5]),
                "dead": CacheSettings(backend: "redis", location: ["redis://:hunter2-url@127.0.0.1:\(deadPort)/0"],
                                      options: ["PASSWORD": "hunter2-option", "CONNECT_TIMEOUT": 0.5]),
                "sasl": CacheSettings(backend: "memcached", location: [TestServers.memcachedSASL ?? "127.0.0.1:1"],
                                      options: ["BINARY_PROTOCOL": true, "USERNAME": "tandem", "PASSWORD": "hunter2-sasl",
                                                "CONNECT_TIMEOUT": 0.5, "POLL_TIMEOUT": 0.5]),
            ]
            var texts: [String] = settings.values.map(\.description)
            let caches = try Caches(settings: settings)
            for alias in ["default", "dead", "sasl"] {
                let c = try caches[alias]
                texts.append(c.backend.backendDescription)
                for _ in 0..<3 {
                    do { _ = try await c.async.get("k") as String? } catch { texts.append("\(error)"); texts.append(String(reflecting: error)) }
                    do { _ = try await onPlainThread { try c.get("k") as String? } } catch {
                        texts.append("\(error)")
                        texts.append(String(reflecting: error))
                    }
                }
            }
            for url in ["redis://u:hunter2-url@127.0.0.1:notaport", "rediss://u:hunter2-url@h:1", "mongo://u:hunter2-url@h"] {
                do { _ = try CacheSettings(url: url) } catch { texts.append("\(error)") }
                do { _ = try Caches(settings: ["default": CacheSettings(backend: "redis", location: [url])]) } catch { texts.append("\(error)") }
            }
            try await Task.sleep(for: .milliseconds(200))
            let lines = logs.all
            #expect(!lines.isEmpty && lines.contains { $0.contains("redis") }, "the failures were logged (the check is not vacuous)")
            #expect(texts.count > 20)
            for secret in secrets {
                let leakedLog = lines.filter { $0.contains(secret) }
                let leakedText = texts.filter { $0.contains(secret) }
                #expect(leakedLog.isEmpty, "\(secret) in a log line: \(leakedLog.prefix(2))")
                #expect(leakedText.isEmpty, "\(secret) in an error or description: \(leakedText.prefix(2))")
            }
            Figures.record("secrets in logs, errors and descriptions", [
                "log_lines_checked": lines.count, "errors_and_descriptions_checked": texts.count, "secrets_found": 0,
            ])
        }
    }
}
