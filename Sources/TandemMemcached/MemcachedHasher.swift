import CMemcached
import Foundation
import Synchronization
import TandemLoop

/// Which server a key lives on, decided by libmemcached itself (`memcached_generate_hash` on a handle
/// configured like the blocking face's pool), so that both faces always agree. Servers set aside after
/// a failure are left out the way libmemcached's `REMOVE_FAILED_SERVERS` leaves them out: the
/// distribution is computed over the servers still in use.
final class MemcachedHasher: Sendable {
    /// One libmemcached handle used only for hashing (it never connects), and the position in the
    /// configured server list of each of its servers.
    private final class Distribution: @unchecked Sendable {
        // Why @unchecked Sendable is safe: after init the handle is only read
        // (`memcached_generate_hash` hashes the key and searches the continuum; only the
        // `_with_redistribution` variant, never called here, rebuilds anything, and auto-eject is not
        // set on this handle), so concurrent readers are safe; it is freed once, in deinit.
        let handle: UnsafeMutablePointer<memcached_st>
        let positions: [Int]

        init?(servers: [(index: Int, server: MemcachedConfiguration.Server)], consistent: Bool) {
            let option = servers.map { s -> String in
                switch s.server {
                case .tcp(let h, let p): return "--SERVER=\(h):\(p)"
                case .unix(let path): return "--SOCKET=\"\(path)\""
                }
            }.joined(separator: " ")
            guard !servers.isEmpty, let m = option.withCString({ memcached($0, strlen($0)) }) else { return nil }
            if consistent {
                _ = memcached_behavior_set(m, MEMCACHED_BEHAVIOR_DISTRIBUTION, UInt64(MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA.rawValue))
            }
            var positions: [Int] = []
            for pos in 0..<memcached_server_count(m) {
                guard let instance = memcached_server_instance_by_position(m, pos), let cName = memcached_server_name(instance) else {
                    memcached_free(m)
                    return nil
                }
                let name = String(cString: cName)
                let port = Int(memcached_server_port(instance))
                let match = servers.first { s in
                    switch s.server {
                    case .tcp(let h, let p): return h == name && p == port
                    case .unix(let path): return path == name
                    }
                }
                guard let match else {
                    memcached_free(m)
                    return nil
                }
                positions.append(match.index)
            }
            handle = m
            self.positions = positions
        }

        deinit { memcached_free(handle) }

        func server(for key: String) -> Int {
            let i = key.withCString { memcached_generate_hash(handle, $0, strlen($0)) }
            return positions[Int(i) % positions.count]
        }
    }

    private let servers: [MemcachedConfiguration.Server]
    private let consistent: Bool
    /// The distribution over every server (the common case, read without a lock).
    private let all: Distribution
    /// Distributions that leave servers out, by the set left out (a flag per server).
    private let cache = Mutex<[[Bool]: Distribution]>([:])

    init?(servers: [MemcachedConfiguration.Server], consistent: Bool) {
        self.servers = servers
        self.consistent = consistent
        guard let all = Distribution(servers: Array(servers.enumerated()).map { ($0.offset, $0.element) }, consistent: consistent) else { return nil }
        self.all = all
    }

    /// The position (in the configured list) of the server `key` goes to over every server.
    func server(for key: String) -> Int {
        servers.count == 1 ? 0 : all.server(for: key)
    }

    /// The position (in the configured list) of the server `key` goes to, leaving out the servers
    /// marked in `excluded`; nil when every server is left out.
    func server(for key: String, excluding excluded: [Bool]) -> Int? {
        if !excluded.contains(true) { return server(for: key) }
        if servers.count == 1 { return nil }
        return cache.locked { cache -> Int? in
            if let d = cache[excluded] { return d.server(for: key) }
            let live = servers.enumerated().filter { !excluded[$0.offset] }.map { ($0.offset, $0.element) }
            guard let d = Distribution(servers: live, consistent: consistent) else { return nil }
            if cache.count > 64 { cache = [:] }
            cache[excluded] = d
            return d.server(for: key)
        }
    }
}
