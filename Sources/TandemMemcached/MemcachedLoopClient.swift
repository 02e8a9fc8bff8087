import CoreMetrics
import Synchronization
@_spi(Backend) import TandemCache
import TandemTransport
import TandemLoop

/// memcached's async face on the event loops: on each loop, one meta-protocol connection per server,
/// owned by that loop; keys go to the server libmemcached's own distribution names
/// (``MemcachedHasher``), so the blocking face always finds what this face wrote. No thread of its own.
///
/// A call is served by the loop its caller runs on, else by the loop its thread was given (as for
/// Redis, see ``LoopPicker``). Everything submitted on a loop in one turn goes out in one write per
/// server; a many-key get is a quiet batch (`mg ... q` per key, then `mn`) per server, the servers
/// asked at once.
final class MemcachedLoopClient: Sendable {
    /// The loops, in the order of ``perLoop``.
    let loops: [any TandemEventLoop]
    /// Per loop: a connection to every server, in the order of the configured servers.
    private let perLoop: [[MemcachedLoopConnection]]
    private let picker: LoopPicker
    private let names: [String]
    private let hasher: MemcachedHasher
    private let removeFailedServers: Bool
    private let retryNanos: UInt64
    /// Per server: the monotonic time until which it is left out after a failure (0: in use).
    private final class SetAside: Sendable {
        let until: Mutex<[UInt64]>
        init(count: Int) { until = Mutex(Array(repeating: 0, count: count)) }
    }
    private let setAside: SetAside

    /// - Precondition: `loops` is not empty.
    init(loops: [any TandemEventLoop], config: MemcachedConfiguration, alias: String, metricsFactory: (any MetricsFactory)? = nil) throws {
        precondition(!loops.isEmpty, "memcached's async face needs a loop")
        self.loops = loops
        picker = LoopPicker(loops)
        names = config.servers.map(\.description)
        guard let h = MemcachedHasher(servers: config.servers, consistent: config.consistentHashing) else {
            throw CacheError.invalidSetting(alias: alias, field: "LOCATION", reason: "libmemcached rejected the server list")
        }
        hasher = h
        removeFailedServers = config.removeFailedServers
        retryNanos = UInt64(config.retryTimeout) * 1_000_000_000
        setAside = SetAside(count: config.servers.count)
        let metrics = config.servers.map {
            ConnectionMetrics.make(system: "memcached", pool: $0.description, face: "async", pipelined: true, factory: metricsFactory)
        }
        perLoop = loops.map { loop in
            config.servers.enumerated().map { i, s in
                MemcachedLoopConnection(loop: loop, address: s.address, name: s.description,
                                        commandTimeout: Double(config.pollTimeoutMs) / 1000, connectTimeout: Double(config.connectTimeoutMs) / 1000,
                                        metrics: metrics[i])
            }
        }
        // A failure on any loop's connection sets its server aside for every loop, as one client would.
        for connections in perLoop {
            for (i, c) in connections.enumerated() {
                c.onFailure = { [setAside, removeFailedServers, retryNanos] _ in
                    guard removeFailedServers, retryNanos > 0 else { return }
                    let until = monotonicNanos() &+ retryNanos
                    setAside.until.locked { $0[i] = until }
                }
            }
        }
    }

    /// The loop the next call goes to and its connections (one per server).
    var next: (loop: any TandemEventLoop, connections: [MemcachedLoopConnection]) {
        let i = picker.index()
        return (loops[i], perLoop[i])
    }

    /// The server `key` goes to now (servers set aside after a failure are left out).
    func server(for key: String) throws -> Int {
        // The front has validated the key; checked again (the same rule) before a byte is written.
        if let problem = memcachedKeyProblem(key) { throw CacheError.invalidKey(key: key, reason: problem) }
        let now = monotonicNanos()
        // Nil (no allocation) while every server is in use, the common case.
        guard let excluded = setAside.until.locked({ until in until.contains { $0 > now } ? until.map { $0 > now } : nil }) else {
            return hasher.server(for: key)
        }
        guard let s = hasher.server(for: key, excluding: excluded) else {
            throw CacheError.connectionFailed(server: names.joined(separator: ","), reason: "every server is set aside after failures")
        }
        return s
    }

    // MARK: one request, one reply

    /// Sends `request` to server `index` and returns its one reply, which the caller interprets (in
    /// its task, not on the loop; no closure per request).
    private func exchange(_ index: Int, _ request: [UInt8]) async throws -> MetaReply {
        let (loop, connections) = next
        do {
            return try await withPromise(waiterLoop: loop) { (p: LoopPromise<MetaReply>) in
                connections[index].submit(request, p)
            }
        } catch let error as TandemError where error.code == .loopShutDown {
            throw CacheError.shutDown("the event loop of memcached \(names[index])")
        }
    }

    private func unexpected(_ reply: MetaReply, _ index: Int, _ operation: String) -> CacheError {
        if case .error(let kind, let message) = reply.code {
            return .serverError(server: names[index], message: "\(operation): \(kind) \(message)".trimmingCharacters(in: .whitespaces))
        }
        return .serverError(server: names[index], message: "\(operation): unexpected reply \(reply.code)")
    }

    func get(_ key: String) async throws -> StoredValue? {
        let s = try server(for: key)
        let reply = try await exchange(s, MetaRequest.get(key))
        switch reply.code {
        case .value: return StoredValue(bytes: reply.value, kind: ValueKind(rawValue: reply.clientFlags))
        case .miss: return nil
        default: throw unexpected(reply, s, "get")
        }
    }

    func set(_ key: String, _ value: StoredValue, expiry: CacheExpiry, mode: SetMode) async throws -> Bool {
        let s = try server(for: key)
        var req: [UInt8] = []
        MetaRequest.set(&req, key: key, value: value, expiry: expiry, add: mode == .add)
        let reply = try await exchange(s, req)
        switch reply.code {
        case .stored: return true
        case .notStored, .exists: return false
        case .error(_, let message) where message.lowercased().contains("too large"):
            // As Django does: a value that cannot be stored must not leave a stale one behind.
            _ = try? await delete(key)
            throw CacheError.valueTooLarge(key: key, size: value.bytes.count, limit: nil)
        default: throw unexpected(reply, s, mode == .add ? "add" : "set")
        }
    }

    func delete(_ key: String) async throws -> Bool {
        let s = try server(for: key)
        var req: [UInt8] = []
        MetaRequest.line(&req, "md", key)
        let reply = try await exchange(s, req)
        switch reply.code {
        case .stored: return true
        case .notFound: return false
        default: throw unexpected(reply, s, "delete")
        }
    }

    /// Deletes `key` if it holds `expected`'s bytes: `mg` with the CAS, then `md` with that CAS (`C`),
    /// which memcached refuses (`EX`) if anyone wrote the key in between. Both on the same server.
    func deleteIfEqual(_ key: String, _ expected: StoredValue) async throws -> Bool {
        let s = try server(for: key)
        var get: [UInt8] = []
        MetaRequest.line(&get, "mg", key, "v c")
        let found = try await exchange(s, get)
        switch found.code {
        case .value: break
        case .miss: return false
        default: throw unexpected(found, s, "delete")
        }
        guard found.value == expected.bytes, let cas = found.cas else { return false }
        var delete: [UInt8] = []
        MetaRequest.line(&delete, "md", key, "C\(cas)")
        let reply = try await exchange(s, delete)
        switch reply.code {
        case .stored: return true
        case .exists, .notFound: return false
        default: throw unexpected(reply, s, "delete")
        }
    }

    /// memcached's own atomic arithmetic (`ma`); a result above `Int64.max` (from a value another
    /// client stored) is undone and refused, as in the blocking face.
    func incr(_ key: String, by delta: Int64) async throws -> Int64 {
        let s = try server(for: key)
        func request(_ d: Int64) -> [UInt8] {
            var req: [UInt8] = []
            MetaRequest.line(&req, "ma", key, "v D\(d.magnitude) M\(d >= 0 ? "I" : "D")")
            return req
        }
        let reply = try await exchange(s, request(delta))
        let value: UInt64
        switch reply.code {
        case .value:
            guard let v = UInt64(String(decoding: reply.value, as: UTF8.self)) else { throw CacheError.notAnInteger(key: key) }
            value = v
        case .notFound: throw CacheError.missingKey(key)
        case .error(_, let message) where message.lowercased().contains("non-numeric"): throw CacheError.notAnInteger(key: key)
        default: throw unexpected(reply, s, "incr")
        }
        switch MemcachedCounter.outcome(value, delta: delta) {
        case .value(let v): return v
        case .overflowed(let undo):
            if let undo { _ = try? await exchange(s, request(undo)) }
            throw CacheError.notAnInteger(key: key)
        }
    }

    func touch(_ key: String, expiry: CacheExpiry) async throws -> Bool {
        let s = try server(for: key)
        var req: [UInt8] = []
        MetaRequest.line(&req, "mg", key, "T\(MetaRequest.ttl(expiry))")
        let reply = try await exchange(s, req)
        switch reply.code {
        case .stored: return true
        case .miss: return false
        default: throw unexpected(reply, s, "touch")
        }
    }

    func hasKey(_ key: String) async throws -> Bool {
        let s = try server(for: key)
        var req: [UInt8] = []
        MetaRequest.line(&req, "mg", key)
        let reply = try await exchange(s, req)
        switch reply.code {
        case .stored: return true
        case .miss: return false
        default: throw unexpected(reply, s, "has_key")
        }
    }

    /// flush_all on every server (every key there, as Django's memcached clear does).
    func clear() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in names.indices {
                var req: [UInt8] = []
                MetaRequest.line(&req, "flush_all")
                group.addTask {
                    let reply = try await self.exchange(i, req)
                    guard reply.code == .ok else { throw self.unexpected(reply, i, "flush_all") }
                }
            }
            try await group.waitForAll()
        }
    }

    // MARK: many keys

    /// Groups `keys` by server, in the order given.
    private func byServer(_ keys: [String]) throws -> [Int: [Int]] {
        var groups: [Int: [Int]] = [:]
        for (i, k) in keys.enumerated() { groups[try server(for: k), default: []].append(i) }
        return groups
    }

    /// One quiet batch per server (`mg <key> v f q O<n>` for each key, then `mn`), all servers at once.
    func getMany(_ keys: [String]) async throws -> [String: StoredValue] {
        if keys.isEmpty { return [:] }
        let groups = try byServer(keys)
        var requests: [(Int, [UInt8], [Int])] = []
        for (s, positions) in groups {
            var req: [UInt8] = []
            for p in positions { MetaRequest.line(&req, "mg", keys[p], "v f q O\(p)") }
            MetaRequest.line(&req, "mn")
            requests.append((s, req, positions))
        }
        let found = try await batches(requests, operation: "get_many")
        var out: [String: StoredValue] = [:]
        for (p, reply) in found where reply.code == .value {
            out[keys[p]] = StoredValue(bytes: reply.value, kind: ValueKind(rawValue: reply.clientFlags))
        }
        return out
    }

    /// Sends each server's batch at once and collects the replies that carry an opaque index; fails
    /// with the first error (a server error reply, or a connection failure).
    private func batches(_ requests: [(Int, [UInt8], [Int])], operation: String) async throws -> [(Int, MetaReply)] {
        let names = self.names
        let (loop, connections) = next
        do {
            return try await withLoopPromise(on: loop) { (p: LoopPromise<[(Int, MetaReply)]>) in
                var remaining = requests.count
                var collected: [(Int, MetaReply)] = []
                for (s, req, _) in requests {
                    var failure: CacheError?
                    connections[s].send(req) { r in
                        switch r {
                        case .failure(let e):
                            p.fail(e)
                            return true
                        case .success(let reply):
                            switch reply.code {
                            case .noop:
                                if let failure { p.fail(failure) }
                                remaining -= 1
                                if remaining == 0 { p.succeed(collected) }
                                return true
                            case .error(let kind, let message):
                                failure = failure ?? .serverError(server: names[s], message: "\(operation): \(kind) \(message)")
                            default:
                                if let o = reply.opaque { collected.append((o, reply)) }
                            }
                            return false
                        }
                    }
                }
            }
        } catch let error as TandemError where error.code == .loopShutDown {
            throw CacheError.shutDown("the event loop of memcached \(names.joined(separator: ","))")
        }
    }

    /// Every set in one write per server; returns the keys that were not stored.
    func setMany(_ items: [(key: String, value: StoredValue)], expiry: CacheExpiry) async throws -> [String] {
        try await withThrowingTaskGroup(of: String?.self) { group in
            for item in items {
                let (key, value) = (item.key, item.value)
                group.addTask { (try? await self.set(key, value, expiry: expiry, mode: .set)) == true ? nil : key }
            }
            var failed: [String] = []
            for try await k in group { if let k { failed.append(k) } }
            return failed
        }
    }

    /// Deletes every key (pipelined per server).
    func deleteMany(_ keys: [String]) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for k in keys { group.addTask { _ = try await self.delete(k) } }
            try await group.waitForAll()
        }
    }

    /// Closes every connection (each on its loop); the next request reconnects.
    func close() {
        for (loop, connections) in zip(loops, perLoop) {
            let work: @Sendable () -> Void = { for c in connections { c.close() } }
            if loop.inEventLoop { work() } else { try? loop.execute(work) }
        }
    }
}

extension MemcachedConfiguration.Server {
    /// The socket address of this server.
    var address: ServerAddress {
        switch self {
        case .tcp(let h, let p): return .tcp(host: h, port: p)
        case .unix(let path): return .unix(path: path)
        }
    }
}
