/// Where a loop connection (Redis, memcached) stands, on its loop thread.
package enum LoopConnectionState: Equatable {
    /// Not connected; the next command connects.
    case idle
    /// Looking up the host (off the loop), then connecting to its addresses in turn (and, with TLS,
    /// the handshake).
    case connecting
    /// Connected: commands go out.
    case ready
    /// A connect or the connection failed: commands fail at once with `reason` until `until`
    /// (monotonic nanoseconds, ``ReconnectBackoff``), then the next command connects again.
    case backoff(until: UInt64, reason: String)
    /// The loop shut down (or the connection was shut down): every command fails at once.
    case closed
}
