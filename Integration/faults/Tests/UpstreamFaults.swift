import Foundation
import Tandem
import TandemTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Open file descriptors of this process (sockets included).
func openDescriptors() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}

/// What each open descriptor is (for leak reports).
func describeDescriptors() -> [String] {
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return fds.sorted().map { fd in "\(fd)->" + ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd)) ?? "?") }
}

extension Faults {
    @Suite struct UpstreamFaults {
        struct Case: Sendable, CustomTestStringConvertible {
            let name: String
            let path: String
            /// The typed error expected, as a predicate.
            let expected: @Sendable (UpstreamError) -> Bool
            /// How long the failure may take at most (the configured timeout it depends on, plus slack).
            let bound: Duration
            var testDescription: String { name }
        }

        static let connectTimeout: Duration = .seconds(1)
        static let requestTimeout: Duration = .milliseconds(1500)
        static let slack: Duration = .milliseconds(750)

        @Test(.timeLimit(.minutes(2)), arguments: [FaceKind.async, .blocking])
        func everyUpstreamFaultIsATypedErrorInTimeAndLeaksNothing(_ face: FaceKind) async throws {
            let base = try TestServers.need(TestServers.httpUpstream, "HTTP upstream")
            let refusedPort = try freeLoopbackPort()
            let (silent, silentPort) = try silentListener()
            defer { close(silent) }
            let cases: [Case] = [
                Case(name: "connection refused", path: "http://127.0.0.1:\(refusedPort)/x",
                     expected: { $0.code == .connectFailed }, bound: Self.connectTimeout + Self.slack),
                Case(name: "accepts, never answers", path: "http://127.0.0.1:\(silentPort)/x",
                     expected: { $0.code == .timeout }, bound: Self.requestTimeout + Self.slack),
                Case(name: "reads the request, never answers", path: base + "/never",
                     expected: { $0.code == .timeout }, bound: Self.requestTimeout + Self.slack),
                Case(name: "trickling body", path: base + "/slow-body?n=100",
                     expected: { $0.code == .timeout }, bound: Self.requestTimeout + Self.slack),
                Case(name: "garbage instead of HTTP", path: base + "/garbage",
                     expected: { $0.code == .invalidResponse }, bound: Self.slack),
                Case(name: "reset mid-body", path: base + "/close",
                     expected: { $0.code == .upstreamClosed }, bound: Self.slack),
                Case(name: "oversized body (5 MB, limit 1 MiB)", path: base + "/bytes/5000000",
                     expected: { $0.code == .bodyTooLarge }, bound: Self.slack),
                Case(name: "DNS failure", path: "http://no-such-host.invalid/x",
                     expected: { $0.code == .dnsFailed }, bound: Self.connectTimeout + Self.slack),
            ]
            // Warm-up on a throwaway client: libcurl, OpenSSL and the resolver open a few descriptors
            // once per process; what is measured below is what a client leaves behind.
            let warm = UpstreamClient(loop: TestLoops.epoll)
            _ = try? await warm.async.get("http://no-such-host.invalid/x")
            _ = try? await warm.async.get(base + "/garbage")
            _ = try? await warm.async.get(base + "/bytes/1")
            await warm.shutdown()
            try await Task.sleep(for: .milliseconds(100))  // dispatch makes its timer descriptors on first use
            let fdsBefore = openDescriptors()
            let described = describeDescriptors()
            let promisesBefore = (LoopPromiseStats.created, LoopPromiseStats.resumed)
            var config = UpstreamClientConfiguration()
            config.connectTimeout = UpstreamFaults.connectTimeout
            config.requestTimeout = UpstreamFaults.requestTimeout
            config.maxBodyBytes = 1 << 20
            let http = UpstreamClient(loop: TestLoops.epoll, configuration: config)
            var rows: [String: Int] = [:]
            for c in cases {
                let start = ContinuousClock.now
                let outcome: Result<UpstreamResponse, any Error>
                switch face {
                case .async:
                    outcome = await Result { try await http.async.get(c.path) }
                case .blocking:
                    outcome = await Result { try await onPlainThread { try http.get(c.path) } }
                }
                let took = ContinuousClock.now - start
                switch outcome {
                case .success(let r):
                    Issue.record("\(c.name): expected an error, got status \(r.status)")
                case .failure(let e as UpstreamError):
                    #expect(c.expected(e), "\(c.name): unexpected \(e)")
                case .failure(let e):
                    Issue.record("\(c.name): untyped error \(e)")
                }
                #expect(took <= c.bound, "\(c.name) failed within its configured time: took \(took), bound \(c.bound)")
                rows[c.name] = ms(took)
            }
            // The client is still healthy, and nothing is left behind.
            #expect(try await http.async.get(base + "/bytes/10").body.count == 10, "a normal request works after the faults")
            let counts = try await http.handleCounts()
            #expect(counts.active == 0, "no transfer left in the multi handle")
            await http.shutdown()
            try await Task.sleep(for: .milliseconds(100))
            let fdsAfter = openDescriptors()
            #expect(fdsAfter <= fdsBefore, "no descriptor leaked: \(fdsBefore) before, \(fdsAfter) after: \(Set(describeDescriptors()).subtracting(described))")
            let created = LoopPromiseStats.created - promisesBefore.0
            let resumed = LoopPromiseStats.resumed - promisesBefore.1
            #expect(created == resumed, "every continuation resumed exactly once (\(created) created, \(resumed) resumed)")
            Figures.record("upstream faults (\(face) face): time to a typed error, ms", [
                "times_ms": rows, "connect_timeout_ms": ms(UpstreamFaults.connectTimeout),
                "request_timeout_ms": ms(UpstreamFaults.requestTimeout),
                "descriptors_before": fdsBefore, "descriptors_after": fdsAfter,
                "continuations_created": created, "continuations_resumed": resumed,
                "easy_handles_created": counts.created, "transfers_left": counts.active,
            ])
        }
    }
}

extension Result where Failure == any Error {
    /// Captures the result of an async throwing body.
    init(_ body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
