import CoreMetrics
import HTTPTypes
import Tracing

/// How an ``UpstreamClient`` behaves.
public struct UpstreamClientConfiguration: Sendable {
    /// Time allowed to connect (TCP and TLS).
    public var connectTimeout: Duration = .seconds(5)
    /// Time allowed for a whole request (including waiting for a free connection).
    public var requestTimeout: Duration = .seconds(30)
    /// Most connections to one host (0: no limit); further requests wait.
    public var maxConnectionsPerHost: Int = 0
    /// Most connections in total (0: no limit).
    public var maxConnections: Int = 0
    /// Most idle keep-alive connections kept for reuse. libcurl's own default follows the number of
    /// transfers in flight at the moment, so a client whose load goes up and down would close and
    /// reopen connections; Tandem keeps a fixed number instead.
    public var maxIdleConnections: Int = 256
    /// Largest response body accepted; larger fails with ``UpstreamError/bodyTooLarge(url:limit:)``.
    public var maxBodyBytes: Int = 16 * 1024 * 1024
    /// Follow redirects (off by default).
    public var followRedirects: Bool = false
    /// Most redirects followed when ``followRedirects`` is on.
    public var maxRedirects: Int = 5
    /// Verify TLS peers (on by default, with the system CA store).
    public var verifyTLS: Bool = true
    /// A PEM file of extra trusted CAs (for private CAs).
    public var caFile: String?
    /// Headers sent with every request (a request's own headers come after and win).
    public var defaultHeaders: HTTPFields = [:]
    /// The retry policy of every request that does not bring its own (nil: no retries).
    public var retryPolicy: RetryPolicy?
    /// Caches GET responses in a Tandem cache as a shared HTTP cache does (nil: no caching).
    public var responseCaching: ResponseCaching?
    /// Where `HTTP <METHOD>` spans go (nil: the tracer bootstrapped with `InstrumentationSystem`, if any).
    public var tracer: (any Tracer)?
    /// The hedging policy of every request that brings no policy of its own (nil: no hedging; it
    /// takes precedence over ``retryPolicy``).
    public var hedgingPolicy: HedgingPolicy?
    /// Where the client's metrics go (nil: the factory bootstrapped with `MetricsSystem`); see
    /// ``UpstreamClient`` for the series. With the no-op factory nothing is measured.
    public var metricsFactory: (any MetricsFactory)?
    /// The User-Agent header.
    public var userAgent: String = "tandem/\(UpstreamClient.version)"

    /// The defaults.
    public init() {}
}


/// The configuration's name before 0.2.
@available(*, deprecated, renamed: "UpstreamClientConfiguration")
public typealias HTTPClientConfiguration = UpstreamClientConfiguration
