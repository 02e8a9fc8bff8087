import Foundation
import HTTPTypes
import Logging
import Synchronization
import TandemCache
import TandemLoop

/// Keys being refreshed in the background (stale-while-revalidate), so each is refreshed once.
final class BackgroundRefreshes: Sendable {
    private let keys = Mutex<Set<String>>([])
    func begin(_ key: String) -> Bool { keys.locked { $0.insert(key).inserted } }
    func end(_ key: String) { _ = keys.locked { $0.remove(key) } }
}
