import CoreMetrics
import Synchronization
import TandemLoop

/// The metrics of one server's connections on one face, named after OpenTelemetry's database client
/// conventions, with `db.system.name` (`redis`, `memcached`), `db.client.connection.pool.name` (the
/// server, never with credentials) and `tandem.face` (`blocking`: the pool of connections callers
/// borrow; `async`: the loop-driven connections every caller shares):
///
/// - `db.client.connection.count` (meter) by `db.client.connection.state`: `idle` (pooled, waiting
///   to be borrowed) and `used` (borrowed, or a loop-driven connection that is open);
/// - `db.client.connection.create_time` (timer): how long making a connection took (connect, TLS,
///   handshake), for those that were made;
/// - `db.client.connection.wait_time` (timer): how long a caller waited for a pooled connection;
/// - `db.client.connection.timeouts` (counter): callers that gave up waiting for one;
/// - `tandem.db.client.connection.failures` (counter) by `error.type`: connections that could not be
///   made or broke (``CacheError/kind``);
/// - `tandem.db.client.pending_commands` (meter, loop connections only): commands sent and not yet answered.
package final class ConnectionMetrics: Sendable {
    package let idle: Meter
    package let used: Meter
    package let createTime: Timer
    package let waitTime: Timer
    package let timeouts: Counter
    /// The commands sent on a loop connection and not yet answered (nil for a pool of connections that
    /// callers borrow, in either face).
    package let pending: Meter?
    private let factory: any MetricsFactory
    private let dimensions: [(String, String)]
    private let failures = Mutex<[String: Counter]>([:])

    /// The metrics of `pool` (nil with the no-op factory: nothing is measured, no clock is read).
    /// `pipelined`: the connections queue commands on the loop, so the pending-commands meter exists.
    package static func make(system: String, pool: String, face: String, pipelined: Bool = false,
                             factory: (any MetricsFactory)?) -> ConnectionMetrics? {
        observedMetricsFactory(factory).map {
            ConnectionMetrics(system: system, pool: pool, face: face, pipelined: pipelined, factory: $0)
        }
    }

    private init(system: String, pool: String, face: String, pipelined: Bool, factory f: any MetricsFactory) {
        let dims = [("db.system.name", system), ("db.client.connection.pool.name", pool), ("tandem.face", face)]
        factory = f
        dimensions = dims
        idle = Meter(label: "db.client.connection.count", dimensions: dims + [("db.client.connection.state", "idle")], factory: f)
        used = Meter(label: "db.client.connection.count", dimensions: dims + [("db.client.connection.state", "used")], factory: f)
        createTime = Timer(label: "db.client.connection.create_time", dimensions: dims, factory: f)
        waitTime = Timer(label: "db.client.connection.wait_time", dimensions: dims, factory: f)
        timeouts = Counter(label: "db.client.connection.timeouts", dimensions: dims, factory: f)
        pending = pipelined ? Meter(label: "tandem.db.client.pending_commands", dimensions: dims, factory: f) : nil
    }

    /// A connection could not be made, or broke.
    package func failed(_ error: any Error) {
        let kind = (error as? CacheError)?.kind ?? "_OTHER"
        failures.locked { m in
            if let c = m[kind] { return c }
            let c = Counter(label: "tandem.db.client.connection.failures", dimensions: dimensions + [("error.type", kind)], factory: factory)
            m[kind] = c
            return c
        }.increment()
    }

    /// A connection came up: it took the time since `start` (a `monotonicNanos` reading) to make, and
    /// it is open and in use.
    package func connected(since start: UInt64) {
        createTime.recordNanoseconds(ConnectionMetrics.since(start, monotonicNanos()))
        used.increment()
    }

    /// A caller got a pooled connection (or handle) after waiting since `start` (a `monotonicNanos`
    /// reading); it is in use until the caller gives it back.
    package func lent(waitingSince start: UInt64) {
        waitTime.recordNanoseconds(ConnectionMetrics.since(start, monotonicNanos()))
        used.increment()
    }

    /// Nanoseconds since `start` (a `monotonicNanos` reading).
    package static func since(_ start: UInt64, _ now: UInt64) -> Int64 {
        Int64(clamping: now &- start)
    }
}
