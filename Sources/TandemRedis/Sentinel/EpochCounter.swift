import Logging
import Synchronization
import TandemCache
import TandemTransport
import TandemLoop

/// A failover counter shared by a ``RedisSentinel`` and its watcher.
final class EpochCounter: Sendable {
    let value = Atomic<UInt64>(0)
}
