import Foundation

/// A failed check in the shared suites: thrown, so that any test runner reports it with its place.
public struct CheckFailure: Error, CustomStringConvertible {
    /// What was expected and what happened.
    public let message: String
    /// Where the check stands.
    public let location: String
    /// The failure as the test runner prints it.
    public var description: String { "\(location): \(message)" }
}

/// Throws unless `a == b`.
public func checkEqual<T: Equatable>(_ a: T, _ b: T, _ what: @autoclosure () -> String = "",
                                     file: String = #fileID, line: Int = #line) throws {
    if a != b {
        throw CheckFailure(message: "\(what()) expected \(String(reflecting: b)), got \(String(reflecting: a))",
                           location: "\(file):\(line)")
    }
}

/// Throws unless `condition` holds.
public func check(_ condition: Bool, _ what: @autoclosure () -> String,
                  file: String = #fileID, line: Int = #line) throws {
    if !condition { throw CheckFailure(message: what(), location: "\(file):\(line)") }
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
