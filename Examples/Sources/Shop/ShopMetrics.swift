import CoreMetrics
import Prometheus
import Tandem

/// The shop's metrics, served in Prometheus's text format on `GET /metrics`: what Tandem reports
/// (cache operations, the upstream client, connections and pools, the loops) and anything else
/// recorded through ``factory``.
///
/// Tandem names its metrics after OpenTelemetry's conventions (`http.client.request.duration`,
/// `db.client.connection.count`); Prometheus's names cannot hold a dot, so the names and label names
/// are exported with underscores (`http_client_request_duration`).
public struct ShopMetrics: Sendable {
    /// Where the series live.
    public let registry: PrometheusCollectorRegistry
    /// The factory to give Tandem (`MetricsSystem.bootstrap`, or a cache's and a client's settings).
    public let factory: any MetricsFactory
    /// The loops' counts, published at each scrape.
    let loops: EventLoopMetricsReporter

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        let factory = PrometheusNames(PrometheusMetricsFactory(registry: registry))
        self.factory = factory
        loops = EventLoopMetricsReporter(factory: factory)
    }

    /// Every series now, in Prometheus's text format (the loops' figures as of this call).
    public func exposition() -> [UInt8] {
        loops.report()
        var out: [UInt8] = []
        registry.emit(into: &out)
        return out
    }
}

/// A metrics factory that hands Prometheus's factory names it accepts: every character that may not
/// appear in a Prometheus name becomes `_`, in metric names and label names alike (label values are
/// kept). It covers all five kinds of metric (Prometheus's own factory leaves a meter's name as it is).
struct PrometheusNames: MetricsFactory {
    let base: PrometheusMetricsFactory

    init(_ base: PrometheusMetricsFactory) { self.base = base }

    static func clean(_ name: String) -> String {
        var out = ""
        for (i, c) in name.unicodeScalars.enumerated() {
            let ok = c == "_" || c == ":" || ("a"..."z").contains(c) || ("A"..."Z").contains(c) || (i > 0 && ("0"..."9").contains(c))
            out.unicodeScalars.append(ok ? c : "_")
        }
        return out
    }

    private static func clean(_ dims: [(String, String)]) -> [(String, String)] {
        dims.map { (clean($0.0).replacingOccurrences(of: ":", with: "_"), $0.1) }
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> CounterHandler {
        base.makeCounter(label: Self.clean(label), dimensions: Self.clean(dimensions))
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> FloatingPointCounterHandler {
        base.makeFloatingPointCounter(label: Self.clean(label), dimensions: Self.clean(dimensions))
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> MeterHandler {
        base.makeMeter(label: Self.clean(label), dimensions: Self.clean(dimensions))
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> RecorderHandler {
        base.makeRecorder(label: Self.clean(label), dimensions: Self.clean(dimensions), aggregate: aggregate)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> TimerHandler {
        base.makeTimer(label: Self.clean(label), dimensions: Self.clean(dimensions))
    }

    func destroyCounter(_ handler: CounterHandler) { base.destroyCounter(handler) }
    func destroyMeter(_ handler: MeterHandler) { base.destroyMeter(handler) }
    func destroyFloatingPointCounter(_ handler: FloatingPointCounterHandler) { base.destroyFloatingPointCounter(handler) }
    func destroyRecorder(_ handler: RecorderHandler) { base.destroyRecorder(handler) }
    func destroyTimer(_ handler: TimerHandler) { base.destroyTimer(handler) }
}
