import CoreMetrics
import ServiceLifecycle
import Synchronization

/// Publishes what event loops do through swift-metrics, so that a loop saturating shows before
/// latency does. Every `interval` it reads each loop's ``EventLoopStatistics`` and reports, with the
/// loop's name in `tandem.event_loop.name`:
///
/// - `tandem.event_loop.tasks` (counter): units of work run;
/// - `tandem.event_loop.busy_time` (counter, nanoseconds): time spent running them;
/// - `tandem.event_loop.utilization` (gauge, 0 to 1): the share of the last interval the loop was busy.
///
/// Loops keep their counts whether or not a reporter runs (two clock reads per turn of the loop); the
/// reporter only reads them, off the loops. Run it in your `ServiceGroup`, or call ``report()`` yourself.
///
/// ```swift
/// let reporter = EventLoopMetricsReporter()  // EventLoops.group and EventLoops.shared, every 10 s
/// let group = ServiceGroup(services: [reporter, caches, app], logger: logger)
/// ```
public final class EventLoopMetricsReporter: Service, Sendable {
    private struct Reported {
        var statistics: EventLoopStatistics
        var at: UInt64
    }

    private struct Loop: Sendable {
        let loop: any EventLoopStatisticsReporting
        let tasks: Counter
        let busy: Counter
        let utilization: Gauge
    }

    private let loops: [Loop]
    private let interval: Duration
    private let last: Mutex<[Reported]>

    /// A reporter of `loops`' statistics, every `interval` while it runs as a service (or at each
    /// ``report()``).
    ///
    /// - Parameters:
    ///   - loops: the loops to report (default: every loop of ``EventLoops/group`` and ``EventLoops/shared``).
    ///   - interval: how often ``run()`` reports (default 10 s; at least 10 ms).
    ///   - factory: where the metrics go (nil: the factory bootstrapped with `MetricsSystem` when the
    ///     reporter is made: make it after bootstrapping).
    public init(loops: [any EventLoopStatisticsReporting]? = nil, interval: Duration = .seconds(10),
                factory: (any MetricsFactory)? = nil) {
        let f = factory ?? MetricsSystem.factory
        let chosen: [any EventLoopStatisticsReporting] = loops ?? {
            var all: [any EventLoopStatisticsReporting] = EventLoops.group.loops.compactMap { $0 as? any EventLoopStatisticsReporting }
            if !all.contains(where: { $0 === EventLoops.shared }) { all.append(EventLoops.shared) }
            return all
        }()
        self.loops = chosen.map { loop in
            let dims = [("tandem.event_loop.name", loop.name)]
            return Loop(loop: loop,
                        tasks: Counter(label: "tandem.event_loop.tasks", dimensions: dims, factory: f),
                        busy: Counter(label: "tandem.event_loop.busy_time", dimensions: dims, factory: f),
                        utilization: Gauge(label: "tandem.event_loop.utilization", dimensions: dims, factory: f))
        }
        self.interval = max(interval, .milliseconds(10))
        let now = monotonicNanos()
        last = Mutex(chosen.map { Reported(statistics: $0.statistics, at: now) })
    }

    /// Reports what each loop did since the last report (or since the reporter was made).
    public func report() {
        let now = monotonicNanos()
        let current = loops.map(\.loop.statistics)
        let previous = last.locked { reported -> [Reported] in
            defer { reported = current.map { Reported(statistics: $0, at: now) } }
            return reported
        }
        for (i, loop) in loops.enumerated() {
            let before = previous[i]
            let tasks = current[i].tasks &- before.statistics.tasks
            let busy = current[i].busyNanoseconds &- before.statistics.busyNanoseconds
            loop.tasks.increment(by: Int64(clamping: tasks))
            loop.busy.increment(by: Int64(clamping: busy))
            let elapsed = now &- before.at
            if elapsed > 0 { loop.utilization.record(min(1, Double(busy) / Double(elapsed))) }
        }
    }

    /// Reports every interval until the service group shuts down (or the task is cancelled), then
    /// once more.
    public func run() async throws {
        defer { report() }
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await Task.sleep(for: interval)
            } catch {
                return
            }
            report()
        }
    }
}
