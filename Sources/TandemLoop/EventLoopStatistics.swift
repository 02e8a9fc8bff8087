import Synchronization

/// What a loop has done since it started: the units of work it ran (submitted closures, Swift jobs,
/// readiness callbacks, timers) and the time its thread spent running them rather than waiting.
/// Read by ``EventLoopMetricsReporter``, which turns them into metrics.
public struct EventLoopStatistics: Sendable, Hashable {
    /// Units of work run.
    public var tasks: UInt64
    /// Nanoseconds spent running work (the loop's thread was not waiting for events).
    public var busyNanoseconds: UInt64

    /// Counts.
    public init(tasks: UInt64 = 0, busyNanoseconds: UInt64 = 0) {
        self.tasks = tasks
        self.busyNanoseconds = busyNanoseconds
    }
}

/// A loop that keeps ``EventLoopStatistics`` (both of Tandem's loops do; a loop of your own may).
public protocol EventLoopStatisticsReporting: TandemEventLoop {
    /// The loop's name, as metrics label it.
    var name: String { get }
    /// The counts so far (safe to read from any thread).
    var statistics: EventLoopStatistics { get }
}

/// The counts a loop's thread adds to and any thread reads: relaxed atomics, as each is a total that
/// only its one writer changes.
final class LoopCounters: Sendable {
    private let tasks = Atomic<UInt64>(0)
    private let busy = Atomic<UInt64>(0)

    func add(tasks n: Int, busySince start: UInt64, now: UInt64) {
        if n > 0 { tasks.add(UInt64(n), ordering: .relaxed) }
        busy.add(now &- start, ordering: .relaxed)
    }

    var snapshot: EventLoopStatistics {
        EventLoopStatistics(tasks: tasks.load(ordering: .relaxed), busyNanoseconds: busy.load(ordering: .relaxed))
    }
}
