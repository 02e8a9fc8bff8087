import Foundation
import Synchronization
import Tandem
import TandemTestSupport
import Testing

/// The fault suite: every test here kills, stalls or feeds garbage to real servers, so they run one at
/// a time (`.serialized`), each bounded in time, and report their figures as `FAULT-FIGURE {json}`
/// lines (also appended to `$TANDEM_RUN_DIR/fault-figures.jsonl`) for RELIABILITY.md.
@Suite(.serialized, .enabled(if: TestServers.shouldRun(faultServersAvailable), Comment(rawValue: TestServers.skipMessage)))
struct Faults {}

/// The suite starts its own redis-server and memcached processes and uses the test command's HTTP
/// upstream (and its SASL memcached): without them a bare `swift test` skips it, with
/// `TANDEM_REQUIRE_SERVERS=1` a missing one is a failure.
let faultServersAvailable = FileManager.default.isExecutableFile(atPath: "/usr/bin/redis-server")
    && FileManager.default.isExecutableFile(atPath: "/usr/bin/memcached")
    && TestServers.httpUpstream != nil

/// Figures a fault test reports.
enum Figures {
    static func record(_ fault: String, _ fields: [String: any Sendable]) {
        var object: [String: Any] = ["fault": fault]
        for (k, v) in fields { object[k] = v }
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]),
              let line = String(data: data, encoding: .utf8) else { return }
        print("FAULT-FIGURE \(line)")
        if let dir = ProcessInfo.processInfo.environment["TANDEM_RUN_DIR"],
           let h = FileHandle(forWritingAtPath: dir + "/fault-figures.jsonl") ?? {
               _ = FileManager.default.createFile(atPath: dir + "/fault-figures.jsonl", contents: nil)
               return FileHandle(forWritingAtPath: dir + "/fault-figures.jsonl")
           }() {
            h.seekToEndOfFile()
            h.write(Data((line + "\n").utf8))
            try? h.close()
        }
    }
}

/// Milliseconds, rounded, for figures.
func ms(_ d: Duration) -> Int {
    Int((Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15).rounded())
}

/// What happened to the calls made while a fault was injected: every call is counted when it starts
/// and when it returns, with its latency and outcome.
final class CallLog: Sendable {
    enum Outcome: Sendable, Equatable { case ok, typedError(String), untypedError(String) }
    struct Call: Sendable {
        let face: String
        let start: ContinuousClock.Instant
        let end: ContinuousClock.Instant
        let outcome: Outcome
    }
    private let started = Atomic<Int>(0)
    private let calls = Mutex<[Call]>([])

    /// Runs one call, recording it. Errors are classified, never thrown.
    func run(_ face: String, _ body: () throws -> Void) {
        started.add(1, ordering: .relaxed)
        let start = ContinuousClock.now
        let outcome: Outcome
        do { try body(); outcome = .ok } catch { outcome = CallLog.classify(error) }
        let call = Call(face: face, start: start, end: .now, outcome: outcome)
        calls.locked { $0.append(call) }
    }

    /// Async ``run(_:_:)``.
    func run(_ face: String, _ body: () async throws -> Void) async {
        started.add(1, ordering: .relaxed)
        let start = ContinuousClock.now
        let outcome: Outcome
        do { try await body(); outcome = .ok } catch { outcome = CallLog.classify(error) }
        let call = Call(face: face, start: start, end: .now, outcome: outcome)
        calls.locked { $0.append(call) }
    }

    static func classify(_ error: any Error) -> Outcome {
        switch error {
        case let e as CacheError:
            switch e.code {
            case .timeout: return .typedError("timeout")
            case .connectionFailed: return .typedError("connectionFailed")
            case .poolExhausted: return .typedError("poolExhausted")
            case .serverError: return .typedError("serverError")
            default: return .typedError("\(e)")
            }
        case let e as UpstreamError: return .typedError("\(e)")
        case is CancellationError: return .typedError("cancelled")
        default: return .untypedError("\(type(of: error)): \(error)")
        }
    }

    var all: [Call] { calls.locked { $0 } }
    /// Calls started and not (yet) returned.
    var unfinished: Int { started.load(ordering: .relaxed) - calls.locked { $0.count } }
    var worstLatency: Duration { all.map { $0.end - $0.start }.max() ?? .zero }
    var untyped: [String] { all.compactMap { if case .untypedError(let s) = $0.outcome { return s }; return nil } }
    /// Counts of each outcome, for figures.
    var outcomeCounts: [String: Int] {
        var out: [String: Int] = [:]
        for c in all {
            switch c.outcome {
            case .ok: out["ok", default: 0] += 1
            case .typedError(let k): out[k, default: 0] += 1
            case .untypedError: out["untyped", default: 0] += 1
            }
        }
        return out
    }

    /// What every fault test asks of its calls: each returned, each failure was a typed error, and
    /// none took longer than `bound`.
    func expectEveryCallReturnedTypedWithin(_ bound: Duration, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(unfinished == 0, "every call returned", sourceLocation: sourceLocation)
        #expect(untyped.isEmpty, "every failure was a typed error: \(untyped.prefix(3))", sourceLocation: sourceLocation)
        #expect(worstLatency <= bound, "no call hung: worst \(worstLatency)", sourceLocation: sourceLocation)
    }

    /// Time from `instant` until the first call of `face` that started after it succeeded.
    func firstSuccess(of face: String, after instant: ContinuousClock.Instant) -> Duration? {
        all.filter { $0.face == face && $0.start >= instant && $0.outcome == .ok }.map { $0.end - instant }.min()
    }

    /// Time from `instant` until the end of the last failed call of `face` (nil: none failed after it).
    func lastFailure(of face: String, after instant: ContinuousClock.Instant) -> Duration? {
        all.filter { $0.face == face && $0.end >= instant && $0.outcome != .ok }.map { $0.end - instant }.max()
    }
}

/// Runs `tasks` async workers and `threads` plain threads, each calling `asyncCall` / `blockingCall`
/// in a loop until `duration` has passed, while `script` injects faults. Returns when every worker is done.
func underLoad(
    duration: Duration, tasks: Int, threads: Int,
    asyncCall: @escaping @Sendable (Int, Int) async -> Void,
    blockingCall: @escaping @Sendable (Int, Int) -> Void,
    script: @escaping @Sendable () async throws -> Void
) async throws {
    let end = ContinuousClock.now + duration
    let threadsDoneBox = Box(Atomic<Int>(0))
    for t in 0..<threads {
        let th = Thread {
            var i = 0
            while ContinuousClock.now < end {
                blockingCall(t, i)
                i += 1
            }
            threadsDoneBox.value.add(1, ordering: .relaxed)
        }
        th.stackSize = 1 << 20
        th.start()
    }
    try await withThrowingTaskGroup(of: Void.self) { group in
        for w in 0..<tasks {
            group.addTask {
                var i = 0
                while ContinuousClock.now < end {
                    await asyncCall(w, i)
                    i += 1
                }
            }
        }
        group.addTask { try await script() }
        try await group.waitForAll()
    }
    while threadsDoneBox.value.load(ordering: .relaxed) < threads { try await Task.sleep(for: .milliseconds(10)) }
}


/// A read answered with a wrong value.
struct WrongValue: Error, CustomStringConvertible {
    let key: String
    let got: String?
    var description: String { "\(key) read back as \(got ?? "nil")" }
}

/// ``underLoad(duration:tasks:threads:asyncCall:blockingCall:script:)`` with every worker reading
/// `keys` (each stored as "value of <key>") in both faces, logged in `log` as "async" and "blocking";
/// a read that returns anything else is a ``WrongValue`` (an untyped failure in the log).
func underReadLoad(_ cache: Cache, keys: [String], log: CallLog, duration: Duration, tasks: Int, threads: Int,
                   script: @escaping @Sendable () async throws -> Void) async throws {
    @Sendable func check(_ key: String, _ got: String?) throws {
        if got != "value of \(key)" { throw WrongValue(key: key, got: got) }
    }
    try await underLoad(
        duration: duration, tasks: tasks, threads: threads,
        asyncCall: { w, i in
            let key = keys[(w * 7 + i) % keys.count]
            await log.run("async") { try check(key, try await cache.async.get(key)) }
        },
        blockingCall: { t, i in
            let key = keys[(t * 13 + i) % keys.count]
            log.run("blocking") { try check(key, try cache.get(key)) }
        },
        script: script)
}
