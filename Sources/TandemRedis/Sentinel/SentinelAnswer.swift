import Logging
import Synchronization
import TandemCache
import TandemTransport
import TandemLoop

/// Why a sentinel's answer was not what was asked for.
struct SentinelAnswer: Error, ExpressibleByStringLiteral {
    let text: String
    init(stringLiteral text: String) { self.text = text }
    init(_ text: String) { self.text = text }
}
