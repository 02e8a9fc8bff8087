import Foundation
import Synchronization
import TandemLoop
import Testing

/// A failed check in the shared suites: thrown, so that any test runner reports it with its place.
public struct CheckFailure: Error, CustomStringConvertible {
    /// What was expected and what happened.
    public let message: String
    /// Where the check stands.
    public let location: String
    /// The failure as the test runner prints it.
    public var description: String { "\(location): \(message)" }
    /// A failure with its message and place.
    public init(message: String, location: String) {
        self.message = message
        self.location = location
    }
}

/// Runs `body`, which must throw an error matching `matches`; throws otherwise.
public func checkThrows<R>(_ what: String, file: String = #fileID, line: Int = #line,
                           _ body: () async throws -> R, matches: (any Error) -> Bool) async throws {
    do {
        let r = try await body()
        throw CheckFailure(message: "\(what): expected an error, got \(r)", location: "\(file):\(line)")
    } catch let e as CheckFailure {
        throw e
    } catch {
        if !matches(error) {
            throw CheckFailure(message: "\(what): unexpected error \(error)", location: "\(file):\(line)")
        }
    }
}

/// Runs blocking work on a fresh plain thread (not a Swift task), so that blocking cache calls in tests
/// happen where a real blocking caller would make them and the async-safety guard does not object.
public func onPlainThread<R: Sendable>(_ body: @escaping @Sendable () throws -> R) async throws -> R {
    try await withCheckedThrowingContinuation { (cont: CheckedContinuation<R, any Error>) in
        let t = Thread {
            cont.resume(with: Result { try body() })
        }
        t.stackSize = 1 << 20
        t.start()
    }
}

/// The real time a short-lived key is known to be alive: checks that such a key is *still there* only
/// prove something if they run inside its timeout. On a loaded machine (sanitizer runs, hundreds of
/// behaviours at once on two cores) a step can come seconds late; such a check is then skipped, while
/// every "gone afterwards" check still runs. With an unloaded machine the window is always open.
public struct AliveWindow: Sendable {
    private let start = ContinuousClock.now
    private let seconds: Double
    /// A window of `seconds` (a little less than the key's timeout), starting now: create it just
    /// before the write that starts the key's life.
    public init(_ seconds: Double) { self.seconds = seconds }
    /// True while the key cannot have expired yet.
    public var isOpen: Bool { ContinuousClock.now - start < .milliseconds(Int(seconds * 1000)) }

    /// Checks `a == b` if the window is still open; a late step proves nothing and is not checked.
    public func checkEqual<T: Equatable>(_ a: T, _ b: T, _ what: @autoclosure () -> String = "",
                                         sourceLocation: SourceLocation = #_sourceLocation) throws {
        guard isOpen else { return }
        try #require(a == b, Comment(rawValue: what()), sourceLocation: sourceLocation)
    }
}

/// Starts blocking work on a new plain thread at once (without waiting for a cooperative thread) and
/// returns a handle to await its result later.
public func startOnPlainThread<R: Sendable>(_ body: @escaping @Sendable () throws -> R) -> PlainThreadResult<R> {
    let result = PlainThreadResult<R>()
    let t = Thread { result.finish(Result { try body() }) }
    t.stackSize = 1 << 20
    t.start()
    return result
}

/// The result of ``startOnPlainThread(_:)``.
public final class PlainThreadResult<R: Sendable>: Sendable {
    private let state = Mutex<(result: Result<R, any Error>?, waiter: CheckedContinuation<R, any Error>?)>((nil, nil))
    fileprivate init() {}
    fileprivate func finish(_ r: Result<R, any Error>) {
        let waiter = state.locked { s -> CheckedContinuation<R, any Error>? in
            s.result = r
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(with: r)
    }
    /// Waits for the thread's result.
    public func value() async throws -> R {
        try await withCheckedThrowingContinuation { c in
            let ready = state.locked { s -> Result<R, any Error>? in
                if s.result == nil { s.waiter = c }
                return s.result
            }
            if let ready { c.resume(with: ready) }
        }
    }
}

/// Holds a noncopyable value (a `Mutex`, an `Atomic`) so that escaping closures can share it.
public final class Box<T: ~Copyable & Sendable>: Sendable {
    public let value: T
    public init(_ value: consuming T) { self.value = value }
}

/// Waits (politely) until `condition` holds or `seconds` pass. The limit is generous: it is only
/// reached when the condition never holds, and a loaded machine (sanitizers) can take seconds to
/// start a task.
public func eventually(_ seconds: Double = 30, _ condition: () -> Bool) async throws -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        try await Task.sleep(for: .milliseconds(2))
    }
    return condition()
}

/// Polls the async `condition` every 10 ms until it holds or `seconds` pass; returns whether it held.
public func eventuallyAsync(_ seconds: Double, _ condition: () async -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return await condition()
}

/// The names of this process's threads (`/proc/self/task/*/comm`).
public func threadNames() -> [String] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return tasks.compactMap { t in
        guard let data = try? FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/self/task/\(t)/comm")).readToEnd() else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

extension TandemError {
    /// A guard's refusal without the caller's site, for tests that compare only the operation.
    public var withoutSite: TandemError {
        switch code {
        case .blockingCallOnEventLoop: .blockingCallOnEventLoop(operation: operation ?? "")
        case .blockingCallInAsyncContext: .blockingCallInAsyncContext(operation: operation ?? "")
        default: self
        }
    }
}
