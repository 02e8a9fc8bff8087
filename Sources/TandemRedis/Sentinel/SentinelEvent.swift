import Logging
import Synchronization
import TandemCache
import TandemTransport
import TandemLoop

/// What a ``SentinelWatcher`` heard.
enum SentinelEvent: Sendable {
    /// `+switch-master`: a failover named a new primary.
    case primaryChanged
    /// `-sdown` or `+slave` for one of the service's replicas: one is back or new.
    case replicasChanged
    /// The subscription came back after a break: either may have happened meanwhile.
    case resubscribed
}
