import Metrics
import Synchronization
import TandemLoop

/// The near cache's counters per cache alias, reported from its own tallies once a second (and when
/// it stops), so that a hit pays nothing for them: `tandem_near_cache_hits_total`, `..._misses_total`,
/// `..._invalidations_total`, `..._evictions_total`, `..._flushes_total`, and the gauges
/// `tandem_near_cache_entries` and `tandem_near_cache_bytes`.
final class NearCacheMetrics: Sendable {
    private let hits: Counter
    private let misses: Counter
    private let invalidations: Counter
    private let evictions: Counter
    private let flushes: Counter
    private let entries: Gauge
    private let bytes: Gauge
    private let reported = Mutex(NearCache.Statistics())

    init(alias: String, factory: (any MetricsFactory)?) {
        let f = factory ?? MetricsSystem.factory
        let dims = [("alias", alias)]
        hits = Counter(label: "tandem_near_cache_hits_total", dimensions: dims, factory: f)
        misses = Counter(label: "tandem_near_cache_misses_total", dimensions: dims, factory: f)
        invalidations = Counter(label: "tandem_near_cache_invalidations_total", dimensions: dims, factory: f)
        evictions = Counter(label: "tandem_near_cache_evictions_total", dimensions: dims, factory: f)
        flushes = Counter(label: "tandem_near_cache_flushes_total", dimensions: dims, factory: f)
        entries = Gauge(label: "tandem_near_cache_entries", dimensions: dims, factory: f)
        bytes = Gauge(label: "tandem_near_cache_bytes", dimensions: dims, factory: f)
    }

    /// Adds what `near` counted since the last report.
    func report(_ near: NearCache) {
        let now = near.statistics
        let usage = near.usage
        let before = reported.locked { last in
            let previous = last
            last = now
            return previous
        }
        func add(_ counter: Counter, _ new: Int, _ old: Int) { if new > old { counter.increment(by: Int64(new - old)) } }
        add(hits, now.hits, before.hits)
        add(misses, now.misses, before.misses)
        add(invalidations, now.invalidations, before.invalidations)
        add(evictions, now.evictions, before.evictions)
        add(flushes, now.flushes, before.flushes)
        entries.record(usage.entries)
        bytes.record(usage.bytes)
    }
}
