/// How long a loop connection waits before it connects again after failures in a row: short, since a
/// cache should be back within a fraction of a second of its server, and an attempt against a server
/// that is down costs one refused connect. 50 ms after the first failure, doubling to 250 ms.
package enum ReconnectBackoff {
    /// Milliseconds to wait after `failures` failed connects or connections in a row (1 or more).
    package static func milliseconds(afterFailures failures: Int) -> Int {
        min(250, 25 << min(max(failures, 0), 4))
    }
}
