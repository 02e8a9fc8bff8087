import Logging
import Synchronization
import TandemCache
import TandemTransport
import TandemLoop

/// Where a Sentinel replica reader's connection landed, kept by the connection in both faces. When
/// the sentinels list no healthy replica, a reader connects to the primary; it leaves it (between
/// commands, so that nothing in flight is lost) once the sentinels announce a replica back, or at the
/// latest ``RedisSentinel/fallbackRecheckNanos`` later, and asks again.
struct ReplicaPlacement {
    /// The connection reads from the primary, for want of a healthy replica.
    private(set) var onPrimary = false
    private var replicaEpoch: UInt64 = 0
    private var since: UInt64 = 0

    /// A connect begins (before the sentinels are asked, so that no announcement falls in between).
    mutating func connecting(_ sentinel: RedisSentinel) {
        onPrimary = false
        replicaEpoch = sentinel.replicaEpoch
        since = monotonicNanos()
    }

    /// The ROLE reply of the new connection.
    mutating func learned(role reply: RedisValue) {
        onPrimary = RedisTarget.isPrimaryRole(reply)
    }

    /// True when the connection should be replaced by one the sentinels place anew.
    func shouldMove(_ sentinel: RedisSentinel) -> Bool {
        onPrimary && (sentinel.replicaEpoch != replicaEpoch || monotonicNanos() &- since >= RedisSentinel.fallbackRecheckNanos)
    }
}
