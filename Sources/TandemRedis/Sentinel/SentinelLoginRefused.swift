import Logging
import Synchronization
import TandemCache
import TandemTransport
import TandemLoop

/// A sentinel answered AUTH (or a command sent without it) with an error.
struct SentinelLoginRefused: Error {
    let message: String
}
