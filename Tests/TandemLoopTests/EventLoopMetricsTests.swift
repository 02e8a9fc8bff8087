import MetricsTestKit
import Synchronization
@testable import TandemLoop
import TandemTestSupport
import Testing

/// Loops count the work they run and the time they are busy; the reporter turns the counts into
/// metrics (issue 34).
struct EventLoopMetricsTests {
    @Test(arguments: LoopKind.allCases)
    func aLoopsWorkAndBusyTimeAreReported(_ kind: LoopKind) async throws {
        let loop = try #require(kind.make() as? any EventLoopStatisticsReporting)
        defer { loop.shutdown() }
        let metrics = TestMetrics()
        let reporter = EventLoopMetricsReporter(loops: [loop], factory: metrics)
        let done = Box(Atomic<Int>(0))
        // 50 jobs that each keep the loop busy for a millisecond.
        for _ in 0..<50 {
            try loop.execute {
                let until = monotonicNanos() + 1_000_000
                while monotonicNanos() < until {}
                done.value.add(1, ordering: .relaxed)
            }
        }
        // The loop adds a turn's tasks and then its busy time: wait for both.
        #expect(try await eventually {
            done.value.load(ordering: .relaxed) == 50 && loop.statistics.tasks == 50 && loop.statistics.busyNanoseconds >= 50_000_000
        })
        reporter.report()
        let dims = [("tandem.event_loop.name", loop.name)]
        #expect(try metrics.expectCounter("tandem.event_loop.tasks", dims).totalValue == 50)
        #expect(try metrics.expectCounter("tandem.event_loop.busy_time", dims).totalValue >= 50_000_000)
        let utilization = try metrics.expectGauge("tandem.event_loop.utilization", dims)
        #expect(utilization.lastValue.map { $0 > 0 && $0 <= 1 } == true, "\(String(describing: utilization.lastValue))")
        // Nothing ran since: no more tasks, and, once the loop has stopped turning (a turn that ran
        // nothing still counts the time it took), an interval in which it was idle throughout.
        #expect(try await eventually {
            reporter.report()
            return utilization.lastValue == 0
        }, "\(String(describing: utilization.lastValue))")
        #expect(try metrics.expectCounter("tandem.event_loop.tasks", dims).totalValue == 50)
    }

    @Test func theDefaultReporterCoversTheProcessWideLoops() throws {
        let metrics = TestMetrics()
        let reporter = EventLoopMetricsReporter(factory: metrics)
        reporter.report()
        let names = Set(metrics.recorders.compactMap { $0.dimensions.first { $0.0 == "tandem.event_loop.name" }?.1 })
        #expect(names.contains(EventLoops.shared.name))
        #expect(names.count == Set(EventLoops.group.loops.compactMap { ($0 as? any EventLoopStatisticsReporting)?.name } + [EventLoops.shared.name]).count)
    }
}
