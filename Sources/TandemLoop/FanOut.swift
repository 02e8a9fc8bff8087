/// The error a ``fanOut(deadline:limit:_:)`` operation gets when the deadline passes before it finished.
public struct DeadlineExceeded: Error, Equatable, Sendable, CustomStringConvertible {
    /// The deadline that passed.
    public let deadline: Duration
    /// Creates the error.
    public init(deadline: Duration) { self.deadline = deadline }
    /// "deadline of N exceeded".
    public var description: String { "deadline of \(deadline) exceeded" }
}

/// Runs async operations concurrently (for example two HTTP calls and a cache read for one page) and
/// returns one result per operation, in input order, so a page costs its slowest part, not the sum.
///
/// - `deadline`: when it passes, operations still running are cancelled and reported as
///   ``DeadlineExceeded``; finished results are kept. Each operation's own timeouts still apply.
/// - `limit`: at most this many run at once; the rest start as earlier ones finish (nil: all at once).
///
/// Operations are expected to honour cancellation (Tandem's cache and HTTP calls do, promptly).
/// Errors never escape: each operation's failure is its own `Result`.
public func fanOut<T: Sendable>(
    deadline: Duration? = nil, limit: Int? = nil, _ operations: [@Sendable () async throws -> T]
) async -> [Result<T, any Error>] {
    var results = [Result<T, any Error>?](repeating: nil, count: operations.count)
    if operations.isEmpty { return [] }
    let width = max(1, min(limit ?? operations.count, operations.count))
    await withTaskGroup(of: FanOutEvent<T>.self) { group in
        if let deadline {
            group.addTask {
                try? await Task.sleep(for: deadline)
                return .deadline
            }
        }
        var next = 0
        func start(_ i: Int) {
            let op = operations[i]
            group.addTask {
                do { return .done(i, .success(try await op())) } catch { return .done(i, .failure(error)) }
            }
        }
        while next < width {
            start(next)
            next += 1
        }
        var finished = 0
        while finished < operations.count, let event = await group.next() {
            switch event {
            case .done(let i, let r):
                if results[i] == nil {
                    results[i] = r
                    finished += 1
                }
                if next < operations.count {
                    start(next)
                    next += 1
                }
            case .deadline:
                group.cancelAll()
                if let deadline {
                    for i in results.indices where results[i] == nil {
                        results[i] = .failure(DeadlineExceeded(deadline: deadline))
                    }
                }
                finished = operations.count
            }
        }
        group.cancelAll()
    }
    return results.map { $0 ?? .failure(CancellationError()) }
}

/// What a fan-out child task reports.
enum FanOutEvent<T: Sendable>: Sendable {
    case done(Int, Result<T, any Error>)
    case deadline
}
