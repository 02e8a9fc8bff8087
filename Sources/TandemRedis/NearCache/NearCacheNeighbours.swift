import Synchronization
import TandemLoop

/// The near caches of this process on the same Redis locations: a write through one of them drops
/// the key from all of them, so that the process reads its own writes whichever cache wrote (two
/// aliases on one server, a cache at another version). Each backend joins when it is made and leaves
/// when it goes away.
final class NearCacheNeighbours: Sendable {
    private static let byLocation = Mutex<[String: NearCacheNeighbours]>([:])

    private let location: String
    private let members = Mutex<[ObjectIdentifier: NearCache]>([:])

    private init(location: String) { self.location = location }

    /// The neighbours on `location`, with `near` among them.
    static func joining(_ near: NearCache, location: String) -> NearCacheNeighbours {
        byLocation.locked { all in
            let group = all[location] ?? NearCacheNeighbours(location: location)
            all[location] = group
            group.members.locked { $0[ObjectIdentifier(near)] = near }
            return group
        }
    }

    /// Takes `near` out (its backend is going away); the last one out removes the group.
    func leave(_ near: NearCache) {
        Self.byLocation.locked { all in
            let empty = members.locked { m in
                m[ObjectIdentifier(near)] = nil
                return m.isEmpty
            }
            if empty, all[location] === self { all[location] = nil }
        }
    }

    private var everyone: [NearCache] { members.locked { Array($0.values) } }

    /// Drops `keys` (and the marks of reads in flight) from every near cache on these locations.
    func drop(_ keys: [String]) {
        for near in everyone { near.drop(keys) }
    }

    /// Drops everything from every near cache on these locations.
    func flush() {
        for near in everyone { near.flush() }
    }
}
