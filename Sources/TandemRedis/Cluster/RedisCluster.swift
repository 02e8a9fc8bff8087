import CoreMetrics
import Dispatch
import Foundation
import Logging
import Synchronization
import TandemCache
import TandemTransport
import TandemLoop

/// The slot map of a Redis Cluster and its nodes (each a blocking pool and loop connections, made
/// when a slot first leads to it). The map comes from `CLUSTER SLOTS`, asked of the known nodes and
/// then the seeds; a `MOVED` answer updates one slot at once and the whole map soon after (at most
/// once a second), as does a node that cannot be reached. With `readFromReplicas`, each primary's
/// replicas (as `CLUSTER SLOTS` lists them) get nodes of their own that send `READONLY` when they
/// connect and serve reads of that primary's slots in turn.
final class RedisCluster: Sendable {
    let seeds: [ServerAddress]
    /// Credentials and TLS settings every node shares (its address is a placeholder).
    let template: RedisEndpoint
    let tls: TLSClientContext?
    let settings: RedisNodeSettings
    let readFromReplicas: Bool
    let description: String
    private let logger = Logger(label: "tandem.redis")

    private struct State {
        /// Index into `nodes` for each slot, -1 when no node is known.
        var slots = [Int32](repeating: -1, count: ClusterSlot.count)
        var nodes: [RedisNode] = []
        /// `host:port` of a primary's node, `replica host:port` of a replica's read-only node.
        var byAddress: [String: Int] = [:]
        /// The read-only replica nodes of each primary node (by index into `nodes`).
        var readers: [Int32: [Int32]] = [:]
        var nextReader = 0
        /// Monotonic nanoseconds of the last refresh (or attempt).
        var refreshedAt: UInt64 = 0
        var refreshing = false
        /// Why the last refresh failed (nil when it installed a map).
        var refreshFailure: String?
        /// An async caller's refresh is running (on one offload thread); the other async callers that
        /// need the map wait here instead of holding offload threads on the refresh lock.
        var asyncRefreshRunning = false
        var asyncRefreshWaiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())
    /// Held for the whole of a refresh, so that one runs at a time; a caller that waited for it uses
    /// the map it installed instead of asking again.
    private let refreshLock = NSLock()
    /// The least time between two refreshes a caller waits for (an uncovered slot asks at most this
    /// often); the background refresh after `MOVED` keeps the same pace.
    static let refreshInterval: UInt64 = 1_000_000_000

    /// Redirections followed and map refreshes (nil: not measured).
    let metrics: ClusterMetrics?

    init(endpoint: RedisEndpoint, seeds: [ServerAddress], tls: TLSClientContext?, settings: RedisNodeSettings, readFromReplicas: Bool = false) {
        self.seeds = seeds
        metrics = ClusterMetrics.make(cluster: endpoint.description, factory: settings.metricsFactory)
        template = endpoint
        self.tls = tls
        self.settings = settings
        self.readFromReplicas = readFromReplicas
        description = endpoint.description
    }

    /// The node at `host:port` (a replica's read-only node when `replica`), made on first use.
    func node(host: String, port: Int, replica: Bool = false) -> RedisNode {
        state.locked { s in s.nodes[Int(nodeIndex(host: host, port: port, replica: replica, &s))] }
    }

    /// The index of the node at `host:port` in `s.nodes`, made if new (call under the lock).
    /// `announced`: from a slot map, the name the node announces (nil: none), which TLS checks; a
    /// node whose announced name changed is made anew. Without it (a redirection names only an
    /// address) the node known at that address is used as it is.
    private func nodeIndex(host: String, port: Int, replica: Bool, announced: String?? = .none, _ s: inout State) -> Int32 {
        let address = replica ? "replica \(host):\(port)" : "\(host):\(port)"
        let hostname: String? = announced ?? nil
        if let i = s.byAddress[address], announced == nil || s.nodes[i].endpoint.announcedHostname == hostname { return Int32(i) }
        var endpoint = RedisEndpoint(address: .tcp(host: host, port: port), db: 0, username: template.username, password: template.password,
                                     tls: template.tls, tlsSource: template.tlsSource)
        endpoint.announcedHostname = hostname
        s.nodes.append(settings.makeNode(RedisTarget(endpoint: endpoint, sentinel: nil, clusterReplica: replica), tls: tls))
        s.byAddress[address] = s.nodes.count - 1
        return Int32(s.nodes.count - 1)
    }

    /// The node serving `slot` by the current map (nil before the first refresh or for an uncovered
    /// slot); for a read, one of its primary's replicas in turn when the cluster reads from replicas
    /// and the map lists any. When it lists none, the read goes to the primary and the map is asked
    /// for again soon (at most once a second): a cluster lists its replicas in `CLUSTER SLOTS` only
    /// some seconds after they join, and a replica that failed comes back.
    func knownNode(forSlot slot: Int, reading: Bool = false) -> RedisNode? {
        let (node, noReplica) = state.locked { s -> (RedisNode?, Bool) in
            let primary = s.slots[slot]
            guard primary >= 0 else { return (nil, false) }
            guard reading, readFromReplicas else { return (s.nodes[Int(primary)], false) }
            guard let readers = s.readers[primary], !readers.isEmpty else { return (s.nodes[Int(primary)], true) }
            s.nextReader &+= 1
            return (s.nodes[Int(readers[s.nextReader % readers.count])], false)
        }
        if noReplica { refreshSoon() }
        return node
    }

    /// The node serving `slot` (see ``knownNode(forSlot:reading:)``), asking the cluster for its map
    /// first when it is not known (blocks).
    func node(forSlot slot: Int, reading: Bool = false) throws(CacheError) -> RedisNode {
        if let n = knownNode(forSlot: slot, reading: reading) { return n }
        try refreshShared()
        return try covered(slot, reading)
    }

    /// The same for the async face: a refresh runs on a bridge thread, never on the cooperative pool.
    func asyncNode(forSlot slot: Int, reading: Bool = false) async throws -> RedisNode {
        if let n = knownNode(forSlot: slot, reading: reading) { return n }
        try await asyncRefreshShared()
        return try covered(slot, reading)
    }

    /// ``refreshShared()`` for async callers: one of them runs it on an offload thread, the others
    /// suspend until it is done (a suspended task holds no thread; offload threads blocked on the
    /// refresh lock would starve other blocking work of the process's offload pool).
    private func asyncRefreshShared() async throws {
        let leads = state.locked { s -> Bool in
            if s.asyncRefreshRunning { return false }
            s.asyncRefreshRunning = true
            return true
        }
        guard leads else {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.locked { s -> Bool in
                    guard s.asyncRefreshRunning else { return true }
                    s.asyncRefreshWaiters.append(c)
                    return false
                }
                if now { c.resume() }
            }
            return
        }
        defer {
            let waiters = state.locked { s -> [CheckedContinuation<Void, Never>] in
                s.asyncRefreshRunning = false
                defer { s.asyncRefreshWaiters = [] }
                return s.asyncRefreshWaiters
            }
            for w in waiters { w.resume() }
        }
        try await Bridge.offload { () throws in try self.refreshShared() }
    }

    private func covered(_ slot: Int, _ reading: Bool) throws(CacheError) -> RedisNode {
        guard let n = knownNode(forSlot: slot, reading: reading) else {
            let failure = state.locked { $0.refreshFailure }
            throw CacheError.connectionFailed(server: description, reason: failure.map { "the slot map could not be had: \($0)" }
                ?? "no node serves slot \(slot) (the cluster's map does not cover it; asked again at most once a second)")
        }
        return n
    }

    /// A refresh for a caller that needs the map now (no map yet, or an uncovered slot): one at a time;
    /// a caller that waited for another's refresh uses its map, and none is asked for again within
    /// ``refreshInterval`` of the last one.
    func refreshShared() throws(CacheError) {
        let arrived = monotonicNanos()
        refreshLock.lock()
        defer { refreshLock.unlock() }
        let last = state.locked { $0.refreshedAt }
        if last != 0, last >= arrived || monotonicNanos() &- last < RedisCluster.refreshInterval { return }
        try refreshHoldingLock()
    }

    /// Every node that serves slots (the primaries), asking for the map first if there is none.
    func primaries() throws(CacheError) -> [RedisNode] {
        if knownNode(forSlot: 0) == nil { try refreshShared() }
        return state.locked { s in Set(s.slots.filter { $0 >= 0 }).sorted().map { s.nodes[Int($0)] } }
    }

    /// A `MOVED` answer: `slot` is served by `host:port` now. The whole map is refreshed soon after.
    func moved(slot: Int, host: String, port: Int) {
        state.locked { s in s.slots[slot] = nodeIndex(host: host, port: port, replica: false, &s) }
        refreshSoon()
    }

    /// Asks for the whole map in the background, at most once a second.
    func refreshSoon() {
        let go = state.locked { s -> Bool in
            guard !s.refreshing, monotonicNanos() &- s.refreshedAt > RedisCluster.refreshInterval else { return false }
            s.refreshing = true
            return true
        }
        guard go else { return }
        WorkerPool.lookups.submit {
            try? self.refresh()
        }
    }

    /// Asks the current map's nodes, then the seeds, for `CLUSTER SLOTS` and replaces the map (blocks
    /// while another refresh runs, then runs its own).
    func refresh() throws(CacheError) {
        refreshLock.lock()
        defer { refreshLock.unlock() }
        try refreshHoldingLock()
    }

    /// Where a refresh asks, in order: the nodes of the current map (primaries, then the replicas it
    /// reads from), then the seeds; never a node the map no longer names.
    func refreshCandidates() -> [(host: String, port: Int)] {
        var out: [(host: String, port: Int)] = state.locked { s in
            let used = Set(s.slots.filter { $0 >= 0 }).sorted() + s.readers.keys.sorted().flatMap { s.readers[$0] ?? [] }
            return used.compactMap { i in
                if case .tcp(let h, let p) = s.nodes[Int(i)].endpoint.address { return (h, p) }
                return nil
            }
        }
        for seed in seeds {
            if case .tcp(let h, let p) = seed, !out.contains(where: { $0 == (h, p) }) { out.append((h, p)) }
        }
        var seen: Set<String> = []
        return out.filter { seen.insert("\($0.host):\($0.port)").inserted }
    }

    private func refreshHoldingLock() throws(CacheError) {
        defer { state.locked { s in s.refreshing = false; s.refreshedAt = monotonicNanos() } }
        let candidates = refreshCandidates()
        var reasons: [String] = []
        for (host, port) in candidates {
            let endpoint = RedisEndpoint(address: .tcp(host: host, port: port), db: 0, username: template.username, password: template.password,
                                         tls: template.tls, tlsSource: template.tlsSource)
            do {
                let conn = try BlockingRedisConnection(endpoint: endpoint, tls: tls, connectTimeout: settings.connectTimeout,
                                                       commandTimeout: settings.commandTimeout)
                for command in endpoint.handshake {
                    let reply = try conn.run(command, operation: "AUTH")
                    if case .error(let m) = reply { throw CacheError.authenticationFailed(server: endpoint.description, reason: m) }
                }
                let reply = try conn.run(["CLUSTER".bytes, "SLOTS".bytes], operation: "CLUSTER SLOTS")
                guard case .array(let ranges) = reply, !ranges.isEmpty else {
                    reasons.append("\(host):\(port) answered \(reply) to CLUSTER SLOTS")
                    continue
                }
                try install(ranges, askedHost: host)
                metrics?.refreshed(ok: true)
                return
            } catch let e as CacheError {
                reasons.append("\(host):\(port): \(e)")
            } catch {
                reasons.append("\(host):\(port): \(error)")
            }
        }
        let reason = "no node gave the slot map (\(reasons.joined(separator: "; ")))"
        metrics?.refreshed(ok: false)
        state.locked { $0.refreshFailure = reason }
        throw CacheError.connectionFailed(server: description, reason: reason)
    }

    /// Installs a `CLUSTER SLOTS` answer: `[start, end, [host, port, id], replicas...]` per range
    /// (the replicas, each `[host, port, id]`, only when reading from them). Nodes the new map does
    /// not name are released: they leave the map at once, and their connections are closed once the
    /// calls in flight on them have had their command timeout to end.
    func install(_ ranges: [RedisValue], askedHost: String) throws(CacheError) {
        typealias Address = (host: String, port: Int, hostname: String?)
        /// `[host, port, id, metadata]`, the host empty or `?` meaning the node that was asked; the
        /// metadata (Redis 7: `hostname <name>` when the node announces one) gives the name TLS checks.
        func address(_ value: RedisValue) -> Address? {
            guard case .array(let parts) = value, parts.count >= 2, case .integer(let port) = parts[1], (1...65535).contains(port) else { return nil }
            var hostname: String?
            if parts.count >= 4, case .array(let meta) = parts[3] {
                for i in stride(from: 0, to: meta.count - 1, by: 2) {
                    if case .bulk(let k) = meta[i], k == Array("hostname".utf8), case .bulk(let v) = meta[i + 1], !v.isEmpty {
                        hostname = String(decoding: v, as: UTF8.self)
                    }
                }
            }
            guard case .bulk(let h) = parts[0], !h.isEmpty, h != Array("?".utf8) else { return (askedHost, Int(port), hostname) }
            return (String(decoding: h, as: UTF8.self), Int(port), hostname)
        }
        var assignments: [(ClosedRange<Int>, Address, [Address])] = []
        for r in ranges {
            guard case .array(let parts) = r, parts.count >= 3, case .integer(let start) = parts[0], case .integer(let end) = parts[1],
                  let primary = address(parts[2]), start >= 0, end < ClusterSlot.count, start <= end else {
                throw CacheError.serverError(server: description, message: "a CLUSTER SLOTS answer that is not a slot map")
            }
            let replicas = readFromReplicas ? parts.dropFirst(3).compactMap(address) : []
            assignments.append((Int(start)...Int(end), primary, replicas))
        }
        let released = state.locked { s -> [RedisNode] in
            var slots = [Int32](repeating: -1, count: ClusterSlot.count)
            var readers: [Int32: [Int32]] = [:]
            for (range, primary, replicas) in assignments {
                let i = nodeIndex(host: primary.host, port: primary.port, replica: false, announced: .some(primary.hostname), &s)
                for slot in range { slots[slot] = i }
                if !replicas.isEmpty {
                    readers[i] = replicas.map { nodeIndex(host: $0.host, port: $0.port, replica: true, announced: .some($0.hostname), &s) }
                }
            }
            // Keep only the nodes this map names, renumbered.
            let named = Set(slots.filter { $0 >= 0 } + readers.values.flatMap { $0 })
            var renumbered: [Int32: Int32] = [:]
            var kept: [RedisNode] = []
            var released: [RedisNode] = []
            for (i, n) in s.nodes.enumerated() {
                if named.contains(Int32(i)) {
                    renumbered[Int32(i)] = Int32(kept.count)
                    kept.append(n)
                } else {
                    released.append(n)
                }
            }
            s.nodes = kept
            s.slots = slots.map { $0 >= 0 ? renumbered[$0] ?? -1 : -1 }
            s.readers = Dictionary(uniqueKeysWithValues: readers.compactMap { k, v in
                renumbered[k].map { ($0, v.compactMap { renumbered[$0] }) }
            })
            s.byAddress = s.byAddress.compactMapValues { renumbered[Int32($0)].map(Int.init) }
            s.refreshFailure = nil
            return released
        }
        retire(released)
    }

    /// Closes released nodes' connections after the longest a call in flight on them can still take.
    private func retire(_ nodes: [RedisNode]) {
        guard !nodes.isEmpty else { return }
        logger.info("cluster nodes left the slot map; their connections close after the calls in flight",
                    metadata: ["nodes": "\(nodes.map(\.endpoint.description))"])
        let grace = settings.commandTimeout + settings.connectTimeout + 1
        DispatchQueue.global().asyncAfter(deadline: .now() + grace) {
            for n in nodes {
                n.pool.close()
                for c in n.connections { c.shutdown() }
            }
        }
    }

    /// The addresses of the nodes the cluster keeps (for tests).
    var nodeAddresses: [String] { state.locked { s in s.nodes.map(\.endpoint.description) } }

    func close() {
        for n in state.locked({ $0.nodes }) {
            n.pool.close()
            for c in n.connections { c.shutdown() }
        }
    }
}

/// A cluster's metrics: `tandem.redis.cluster.redirects` (counter) by `kind` (`MOVED`, `ASK`,
/// `TRYAGAIN`), and `tandem.redis.cluster.map_refreshes` (counter) by `outcome` (`ok`, `failed`), with
/// `db.system.name` and `tandem.cluster` (the seeds, never with credentials).
struct ClusterMetrics: Sendable {
    private let moved: Counter
    private let ask: Counter
    private let tryAgain: Counter
    private let refreshOK: Counter
    private let refreshFailed: Counter

    static func make(cluster: String, factory: (any MetricsFactory)?) -> ClusterMetrics? {
        observedMetricsFactory(factory).map { ClusterMetrics(cluster: cluster, factory: $0) }
    }

    private init(cluster: String, factory f: any MetricsFactory) {
        let dims = [("db.system.name", "redis"), ("tandem.cluster", cluster)]
        func redirects(_ kind: String) -> Counter {
            Counter(label: "tandem.redis.cluster.redirects", dimensions: dims + [("kind", kind)], factory: f)
        }
        moved = redirects("MOVED")
        ask = redirects("ASK")
        tryAgain = redirects("TRYAGAIN")
        refreshOK = Counter(label: "tandem.redis.cluster.map_refreshes", dimensions: dims + [("outcome", "ok")], factory: f)
        refreshFailed = Counter(label: "tandem.redis.cluster.map_refreshes", dimensions: dims + [("outcome", "failed")], factory: f)
    }

    func redirected(_ redirect: ClusterRedirect) {
        switch redirect {
        case .moved: moved.increment()
        case .ask: ask.increment()
        case .tryAgain: tryAgain.increment()
        }
    }

    func refreshed(ok: Bool) { (ok ? refreshOK : refreshFailed).increment() }
}
