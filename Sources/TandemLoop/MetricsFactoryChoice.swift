import CoreMetrics

/// The factory Tandem's metrics go to: `factory` when the caller gave one, otherwise the factory
/// bootstrapped with `MetricsSystem`; nil when that is the no-op factory, so that code nobody observes
/// makes no metric objects, reads no clock and takes no lock.
package func observedMetricsFactory(_ factory: (any MetricsFactory)?) -> (any MetricsFactory)? {
    let chosen = factory ?? MetricsSystem.factory
    return chosen is NOOPMetricsHandler ? nil : chosen
}
