import Dispatch
import Foundation
import Logging
import Synchronization
import TandemCache
import TandemTransport
import TandemLoop

/// What a cluster node's answer asks of the client: go elsewhere, or try again.
enum ClusterRedirect: Equatable {
    /// `host` nil: the endpoint is empty (`MOVED 3999 :6380`, Redis 7 with an unknown preferred
    /// endpoint), which means the host of the node that answered.
    case moved(slot: Int, host: String?, port: Int)
    case ask(host: String?, port: Int)
    case tryAgain

    /// `MOVED 3999 127.0.0.1:6381`, `ASK 3999 127.0.0.1:6381`, `MOVED 3999 :6381`, `TRYAGAIN ...`,
    /// `CLUSTERDOWN ...`.
    init?(_ reply: RedisValue) {
        guard case .error(let message) = reply else { return nil }
        if message.hasPrefix("TRYAGAIN") || message.hasPrefix("CLUSTERDOWN") {
            self = .tryAgain
            return
        }
        let words = message.split(separator: " ")
        guard words.count == 3, words[0] == "MOVED" || words[0] == "ASK", let slot = Int(words[1]),
              let colon = words[2].lastIndex(of: ":"), let port = Int(words[2][words[2].index(after: colon)...]) else { return nil }
        var host: String? = String(words[2][..<colon])
        if let h = host, h.hasPrefix("[") && h.hasSuffix("]") { host = String(h.dropFirst().dropLast()) }
        if host?.isEmpty == true { host = nil }
        self = words[0] == "MOVED" ? .moved(slot: slot, host: host, port: port) : .ask(host: host, port: port)
    }
}
