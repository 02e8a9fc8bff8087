import Foundation
import Synchronization
import MetricsTestKit
import Tandem
@testable import TandemRedis
import TandemTestSupport
import Testing
@_spi(Backend) import TandemCache

private let clusterAvailable = TestServers.shouldRun(TestServers.redisCluster != nil)

@Suite(.enabled(if: clusterAvailable, Comment(rawValue: TestServers.skipMessage)))
struct RedisClusterTests {
    @Test func keySlotsAreTheServersSlots() async throws {
        // Tandem's slot function against CLUSTER KEYSLOT on a real node: a wrong slot would only show
        // as a MOVED per command otherwise (followed, so no behaviour test would notice).
        let nodes = try TestServers.need(TestServers.redisCluster, "Redis Cluster")
        let port = try #require(TestServers.hostPort(String(nodes.split(separator: ",")[0]))?.1)
        let keys = ["", "a", "foo", "{user1000}.following", "{user1000}.followers", "foo{}{bar}", "foo{{bar}}zap", "{}x", ":1:key", "ключ", "emoji-😀"]
        for key in keys {
            let server = try await onPlainThread { try RawRedis(port: port).command(["CLUSTER", "KEYSLOT", key]) }
            #expect(server == ":\(ClusterSlot.of(Array(key.utf8)))", "slot of \(key)")
        }
    }

    @Test(arguments: FaceKind.allCases, TestLoops.Kind.allCases)
    func manyKeyOperationsSpanSlotsAndNodes(_ face: FaceKind, _ loop: TestLoops.Kind) async throws {
        let fx = RedisFixture(clusterOn: loop)
        let f = try fx.face(face)
        let keys = (0..<300).map { "many-\($0)" }
        // 300 keys fall in slots of all three primaries.
        let primaries = Set(keys.map { clusterKeySlot(fx.namespace + ":1:" + $0) / 5462 })
        #expect(primaries.count == 3)
        let failed = try await f.setMany(Dictionary(uniqueKeysWithValues: keys.map { ($0, "v-\($0)") }))
        #expect(failed.isEmpty)
        let got: [String: String] = try await f.getMany(keys + ["missing-1", "missing-2"])
        #expect(got.count == 300)
        #expect(keys.allSatisfy { got[$0] == "v-\($0)" })
        try await f.deleteMany(Array(keys.prefix(150)))
        let left: [String: String] = try await f.getMany(keys)
        #expect(left.count == 150 && left["many-0"] == nil && left["many-299"] == "v-many-299")
    }

    /// The ports of the cluster's replicas (CLUSTER NODES), once each of them is in sync with its
    /// primary (`master_link_status:up`) and every node lists it in CLUSTER SLOTS; waits at most
    /// 15 s for `count` of them.
    static func syncedReplicaPorts(seed port: Int, count: Int) async throws -> [Int] {
        var synced: [Int] = []
        for _ in 0..<150 {
            let nodes = try await onPlainThread { try RawRedis(port: port).command(["CLUSTER", "NODES"]) }
            let replicas = nodes.split(separator: "\n").compactMap { line -> Int? in
                let fields = line.split(separator: " ")
                guard fields.count > 2, fields[2].split(separator: ",").contains("slave"), !fields[2].contains("fail"),
                      let address = fields[1].split(separator: "@").first, let colon = address.lastIndex(of: ":") else { return nil }
                return Int(address[address.index(after: colon)...])
            }
            synced = []
            for replica in replicas {
                let info = try await onPlainThread { try RawRedis(port: replica).command(["INFO", "replication"]) }
                if info.contains("master_link_status:up") { synced.append(replica) }
            }
            // Every node's CLUSTER SLOTS must list the replicas too: a new cluster leaves them out for
            // some seconds after CLUSTER NODES shows them.
            var listed = true
            for node in nodes.split(separator: "\n").compactMap({ $0.split(separator: " ").dropFirst().first?.split(separator: "@").first }) {
                guard let colon = node.lastIndex(of: ":"), let port = Int(node[node.index(after: colon)...]) else { continue }
                let slots = try await onPlainThread { try RawRedis(port: port).command(["CLUSTER", "SLOTS"]) }
                for replica in synced where !slots.contains(":\(replica) ") { listed = false }  // `:port $id`
            }
            if synced.count >= count && listed { return synced }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw CheckFailure(message: "\(synced.count) of \(count) cluster replicas were in sync and listed by every node's CLUSTER SLOTS after 15 s", location: "RedisClusterTests")
    }

    /// GETs answered by each of `ports` (INFO commandstats), summed.
    static func getsAnswered(ports: [Int]) async throws -> Int {
        var total = 0
        for port in ports { total += try await SentinelServers.getsAnswered(port: port) }
        return total
    }

    @Test(arguments: FaceKind.allCases, TestLoops.Kind.allCases)
    func readsGoToReplicasWhenAskedAndWritesToPrimaries(_ face: FaceKind, _ loop: TestLoops.Kind) async throws {
        let nodes = try TestServers.need(TestServers.redisCluster, "Redis Cluster")
        let seed = try #require(TestServers.hostPort(String(nodes.split(separator: ",")[0]))?.1)
        let replicas = try await Self.syncedReplicaPorts(seed: seed, count: 3)
        let json = #"{"default": {"BACKEND": "redis", "LOCATION": "redis+cluster://\#(nodes)", "KEY_PREFIX": "ro-\#(face)-\#(loop)", "#
            + #""OPTIONS": {"CONNECT_TIMEOUT": 10, "COMMAND_TIMEOUT": 10, "READ_FROM_REPLICAS": true}}}"#
        let f = Face(try Caches(json: Data(json.utf8), loop: loop.loop).default, face)
        let keys = (0..<30).map { "k\($0)-\(UInt32.random(in: 0 ... .max))" }  // slots of every primary
        // Writes succeed: one sent to a replica would be redirected (MOVED), never stored there.
        #expect(try await f.setMany(Dictionary(uniqueKeysWithValues: keys.map { ($0, "v-\($0)") })).isEmpty)
        // Replication is asynchronous: wait (bounded) until the replicas have every value.
        var seen: [String: String] = [:]
        for _ in 0..<100 where seen.count < keys.count {
            seen = try await f.getMany(keys)
            if seen.count < keys.count { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(seen.count == keys.count && keys.allSatisfy { seen[$0] == "v-\($0)" })
        let before = try await Self.getsAnswered(ports: replicas)
        for key in keys { #expect(try await f.get(key, as: String.self) == "v-\(key)") }
        let many: [String: String] = try await f.getMany(keys)
        #expect(many.count == keys.count)
        let after = try await Self.getsAnswered(ports: replicas)
        // 30 single GETs and a many-key get pipelined as 30 GETs, all on replicas (the test's cases run
        // at once, so others' reads may add to the count, never take from it).
        #expect(after - before >= 2 * keys.count, "the replicas answered \(after - before) of \(2 * keys.count) reads")
        try await f.set(keys[0] + "-n", 1)
        #expect(try await f.incr(keys[0] + "-n", by: 2) == 3)  // a script that writes: on the primary
        try await f.deleteMany(keys + [keys[0] + "-n"])
    }

    @Test func malformedClusterLocationsAreRefused() throws {
        for bad in ["redis+cluster://127.0.0.1:7000/3", "redis+cluster://127.0.0.1:x", "redis+cluster://127.0.0.1:1,,127.0.0.1:2"] {
            do {
                _ = try BackendRegistry.standard.makeCache(alias: "c", settings: CacheSettings(backend: "redis", location: [bad]), loop: nil)
                Issue.record("\(bad) was accepted")
            } catch let error as CacheError where error.code == .invalidSetting {
                let field = error.field ?? ""
                #expect(field == "LOCATION", "\(bad)")
            }
        }
        do {
            _ = try BackendRegistry.standard.makeCache(
                alias: "c", settings: CacheSettings(backend: "redis", location: ["redis+cluster://127.0.0.1:7000", "redis://127.0.0.1:6379"]), loop: nil)
            Issue.record("a cluster location next to another was accepted")
        } catch let error as CacheError where error.code == .invalidSetting {
            let field = error.field ?? ""
            #expect(field == "LOCATION")
        }
        let json = #"{"default": {"BACKEND": "redis", "LOCATION": "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"}}"#
        let cache = try Caches(json: Data(json.utf8)).default
        #expect(cache.backend.backendDescription == "redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
    }
}

/// `rediss+cluster://`: a cluster of the test's own whose nodes speak TLS to clients and to each other.
@Suite(.enabled(if: TestServers.shouldRun(TestServers.tlsDirectory != nil), Comment(rawValue: TestServers.skipMessage)))
struct RedisTLSClusterTests {
    @Test(.timeLimit(.minutes(2)))
    func tlsClusterServesBothFacesAcrossItsNodes() async throws {
        let dir = try #require(TestServers.tlsDirectory)
        let run = UUID().uuidString.prefix(8)
        var nodes: [(server: ServerProcess, tls: Int)] = []
        defer {
            for n in nodes { n.server.stop() }
            for i in 0..<3 { try? FileManager.default.removeItem(atPath: "/tmp/tandem-tls-cluster-\(run)-\(i).conf") }
        }
        for i in 0..<3 {
            let tls = try freeLoopbackPort(), bus = try freeLoopbackPort()
            let server = try await onPlainThread {
                try ServerProcess(.redis, extraArguments: [
                    "--tls-port", String(tls), "--tls-cluster", "yes", "--tls-auth-clients", "no",
                    "--tls-cert-file", "\(dir)/server.pem", "--tls-key-file", "\(dir)/server.key", "--tls-ca-cert-file", "\(dir)/ca.pem",
                    "--cluster-enabled", "yes", "--cluster-port", String(bus), "--cluster-node-timeout", "2000",
                    "--cluster-config-file", "/tmp/tandem-tls-cluster-\(run)-\(i).conf",
                ])
            }
            nodes.append((server, tls))
        }
        let addresses = nodes.map { "127.0.0.1:\($0.tls)" }
        let created = try await onPlainThread {
            try runProgram("/usr/bin/redis-cli", ["--tls", "--cacert", "\(dir)/ca.pem", "--cluster", "create"] + addresses + ["--cluster-yes"], seconds: 60)
        }
        #expect(created.status == 0, Comment(rawValue: created.output))
        for n in nodes {
            let ok = try await eventuallyAsync(30) {
                ((try? await onPlainThread { try RawRedis(port: n.server.port).command(["CLUSTER", "INFO"]) }) ?? "").contains("cluster_state:ok")
            }
            #expect(ok, "node \(n.tls) reached cluster_state:ok")
        }
        let json = #"{"default": {"BACKEND": "redis", "LOCATION": "rediss+cluster://localhost:\#(nodes[0].tls)", "#
            + #""OPTIONS": {"CONNECT_TIMEOUT": 10, "COMMAND_TIMEOUT": 10, "SSL_CA_CERTS": "\#(dir)/ca.pem"}}}"#
        let cache = try Caches(json: Data(json.utf8)).default
        let keys = (0..<60).map { "tls-\($0)" }
        #expect(Set(keys.map { ClusterSlot.of(Array((":1:" + $0).utf8)) / 5462 }).count == 3, "the keys fall on all three nodes")
        for face in FaceKind.allCases {
            let f = Face(cache, face)
            #expect(try await f.setMany(Dictionary(uniqueKeysWithValues: keys.map { ($0, "\(face)-" + $0) })).isEmpty)
            let read = try await f.getMany(keys, as: String.self)
            #expect(read.count == 60 && read["tls-7"] == "\(face)-tls-7", "\(face): every key read back over TLS from its node")
            try await f.set("tls-counter-\(face)", 41)
            #expect(try await f.incr("tls-counter-\(face)") == 42)
        }
        // Each node holds the keys of its slots: the cluster really spread them.
        var held = 0
        for n in nodes {
            let count = try await onPlainThread { try RawRedis(port: n.server.port).command(["DBSIZE"]) }
            held += Int(count.dropFirst()) ?? 0
            #expect(count != ":0", "node \(n.tls) holds some keys")
        }
        #expect(held >= 60)
    }
}

/// Redirections read without a cluster.
struct ClusterRedirectTests {
    @Test func anEmptyEndpointMeansTheNodeThatAnswered() {
        #expect(ClusterRedirect(.error("MOVED 3999 :6380")) == .moved(slot: 3999, host: nil, port: 6380))
        #expect(ClusterRedirect(.error("ASK 3999 :6380")) == .ask(host: nil, port: 6380))
        #expect(ClusterRedirect(.error("MOVED 3999 10.0.0.2:6381")) == .moved(slot: 3999, host: "10.0.0.2", port: 6381))
        #expect(ClusterRedirect(.error("MOVED 3999 [::1]:6381")) == .moved(slot: 3999, host: "::1", port: 6381))
        #expect(ClusterRedirect(.error("TRYAGAIN Multiple keys request during rehashing of slot")) == .tryAgain)
        #expect(ClusterRedirect(.error("MOVED 3999")) == nil)
        #expect(ClusterRedirect(.error("WRONGTYPE Operation against a key")) == nil)
    }
}

/// A one-node cluster on a scripted socket: `CLUSTER SLOTS` names the node itself for `slots`; the
/// second read (GET or EXISTS) is left unanswered and its connection closed (so it meets a
/// connection that answered before); other reads answer (GET: "v", EXISTS: 1); anything else gets +OK.
private final class ScriptedClusterNode: Sendable {
    private let server = Mutex<ScriptedRedis?>(nil)
    let port: Int

    init(slots: ClosedRange<Int> = 0...16383) throws {
        let port = Box(Atomic<Int>(0))
        let mapsAsked = Box(Atomic<Int>(0))
        let reads = Box(Atomic<Int>(0))
        let s = try ScriptedRedis { command, _ in
            switch command.first?.uppercased() ?? "" {
            case "CLUSTER":
                mapsAsked.value.add(1, ordering: .relaxed)
                let id = String(repeating: "a", count: 40)
                return .reply("*1\r\n*3\r\n:\(slots.lowerBound)\r\n:\(slots.upperBound)\r\n*3\r\n$9\r\n127.0.0.1\r\n:\(port.value.load(ordering: .relaxed))\r\n$40\r\n\(id)\r\n")
            case "GET", "EXISTS":
                if reads.value.add(1, ordering: .relaxed).newValue == 2 { return .hangUp }
                return .reply(command[0].uppercased() == "GET" ? "$1\r\nv\r\n" : ":1\r\n")
            default:
                return .reply("+OK\r\n")
            }
        }
        port.value.store(s.port, ordering: .relaxed)
        self.port = s.port
        self.counters = (mapsAsked, reads)
        server.locked { $0 = s }
    }
    private let counters: (maps: Box<Atomic<Int>>, reads: Box<Atomic<Int>>)

    var mapsAskedCount: Int { counters.maps.value.load(ordering: .relaxed) }
    /// The reads seen, as "GET#connection".
    var seen: [String] { server.locked { $0?.log ?? [] }.filter { $0.hasPrefix("recv GET") }.map { String($0.dropFirst(5)) } }
    func stop() { server.locked { $0?.stop() } }
}

/// Both faces of a cluster send an idempotent read once more when the server closed its connection
/// under it, as the plain backend does (the async face did not).
struct ClusterRetryTests {
    @Test(.timeLimit(.minutes(2)), arguments: FaceKind.allCases, TestLoops.Kind.allCases)
    func anIdempotentReadWhoseConnectionTheServerClosesIsSentOnceMore(_ face: FaceKind, _ loop: TestLoops.Kind) async throws {
        let node = try ScriptedClusterNode()
        defer { node.stop() }
        let cache = try BackendRegistry.standard.makeCache(
            alias: "cluster-retry",
            settings: CacheSettings(backend: "redis", location: ["redis+cluster://127.0.0.1:\(node.port)"],
                                    options: ["CONNECT_TIMEOUT": 10, "COMMAND_TIMEOUT": 10]),
            loop: loop.loop)
        func read() async throws -> String? {
            face == .async ? try await cache.async.get("k") : try await onPlainThread { try cache.get("k") }
        }
        #expect(try await read() == "v")
        #expect(try await read() == "v", "the second GET was answered on a new connection")
        let seen = node.seen
        #expect(seen.count == 3 && seen[0] == seen[1] && seen[2] != seen[1] && seen.allSatisfy { $0.hasPrefix("GET#") },
                "the second GET seen twice, the second time on a new connection: \(seen)")
    }
}

/// The slot map's upkeep (issue 29): nodes that leave it are released and never asked again; an
/// uncovered slot asks for the map once for everyone waiting, at most once a second.
struct ClusterMapTests {
    private static func cluster(seeds: [Int]) -> RedisCluster {
        let settings = RedisNodeSettings(loops: [TestLoops.epoll], connectTimeout: 1, commandTimeout: 1, poolSize: 1, poolTimeout: 1,
                                         asyncConnections: 1)
        let template = RedisEndpoint(address: .tcp(host: "cluster", port: 0), db: 0, username: nil, password: nil, tls: nil, tlsSource: "")
        return RedisCluster(endpoint: template, seeds: seeds.map { .tcp(host: "127.0.0.1", port: $0) }, tls: nil, settings: settings)
    }

    private static func map(_ ranges: [(ClosedRange<Int>, Int)]) -> [RedisValue] {
        ranges.map { range, port in
            .array([.integer(Int64(range.lowerBound)), .integer(Int64(range.upperBound)),
                    .array([.bulk(Array("127.0.0.1".utf8)), .integer(Int64(port)), .bulk(Array(String(repeating: "a", count: 40).utf8))])])
        }
    }

    /// Redis 7 announces a node's host name (`cluster-announce-hostname`) in CLUSTER SLOTS's metadata
    /// while the first field stays its IP: TLS checks the certificate against the name (issue 29).
    @Test func anAnnouncedHostnameIsTheNameTLSChecks() throws {
        let c = ClusterMapTests.cluster(seeds: [7000])
        defer { c.close() }
        let id = RedisValue.bulk(Array(String(repeating: "b", count: 40).utf8))
        func node(_ port: Int, _ meta: [String]) -> RedisValue {
            .array([.bulk(Array("127.0.0.1".utf8)), .integer(Int64(port)), id, .array(meta.map { .bulk(Array($0.utf8)) })])
        }
        try c.install([.array([.integer(0), .integer(8000), node(7001, ["hostname", "node1.example"])]),
                       .array([.integer(8001), .integer(16383), node(7002, [])])], askedHost: "127.0.0.1")
        let named = try #require(c.knownNode(forSlot: 10)?.endpoint)
        #expect(named.tlsHost == "node1.example" && named.host == "127.0.0.1")
        #expect(c.knownNode(forSlot: 9000)?.endpoint.tlsHost == "127.0.0.1", "no name announced: the address")
        // The name changes: the node is made anew with it.
        try c.install([.array([.integer(0), .integer(16383), node(7001, ["hostname", "node1.other"])])], askedHost: "127.0.0.1")
        #expect(c.knownNode(forSlot: 10)?.endpoint.tlsHost == "node1.other")
        #expect(c.nodeAddresses == ["redis://127.0.0.1:7001/0"])
    }

    @Test func nodesThatLeaveTheMapAreReleasedAndNotAskedAgain() throws {
        let c = ClusterMapTests.cluster(seeds: [7000])
        defer { c.close() }
        try c.install(ClusterMapTests.map([(0...8000, 7001), (8001...16383, 7002)]), askedHost: "127.0.0.1")
        #expect(Set(c.nodeAddresses) == ["redis://127.0.0.1:7001/0", "redis://127.0.0.1:7002/0"])
        // 7002 hands its slots to 7003 and leaves.
        try c.install(ClusterMapTests.map([(0...8000, 7001), (8001...16383, 7003)]), askedHost: "127.0.0.1")
        #expect(Set(c.nodeAddresses) == ["redis://127.0.0.1:7001/0", "redis://127.0.0.1:7003/0"])
        #expect(c.refreshCandidates().map(\.port) == [7001, 7003, 7000], "the current map's nodes, then the seeds")
        #expect(c.knownNode(forSlot: 9000)?.endpoint.description == "redis://127.0.0.1:7003/0")
        #expect(c.knownNode(forSlot: 10)?.endpoint.description == "redis://127.0.0.1:7001/0")
    }

    @Test(.timeLimit(.minutes(3)), arguments: TestLoops.Kind.allCases)
    func anUncoveredSlotAsksForTheMapOnceForEveryoneWaiting(_ loop: TestLoops.Kind) async throws {
        let node = try ScriptedClusterNode(slots: 0...100)
        defer { node.stop() }
        let cache = try BackendRegistry.standard.makeCache(
            alias: "uncovered",
            settings: CacheSettings(backend: "redis", location: ["redis+cluster://127.0.0.1:\(node.port)"],
                                    options: ["CONNECT_TIMEOUT": 10, "COMMAND_TIMEOUT": 10]),
            loop: loop.loop)
        let key = try #require((0..<1000).map { "u\($0)" }.first { ClusterSlot.of(Array(cache.makeKey($0).utf8)) > 100 })
        let failures = try await withThrowingTaskGroup(of: String.self) { group in
            for i in 0..<40 {
                group.addTask {
                    do {
                        if i % 4 == 0 { _ = try await onPlainThread { try cache.get(key) as String? } } else { _ = try await cache.async.get(key) as String? }
                        return "answered"
                    } catch let e as CacheError {
                        if e.code == .connectionFailed, let reason = e.reason, reason.contains("does not cover") { return "uncovered" }
                        return "\(e)"
                    }
                }
            }
            var out: [String] = []
            for try await r in group { out.append(r) }
            return out
        }
        #expect(failures.allSatisfy { $0 == "uncovered" }, "\(Set(failures))")
        #expect(node.mapsAskedCount <= 3, "the map was asked for \(node.mapsAskedCount) times by 40 callers")
    }
}

/// A cluster's metrics (issue 34): each redirection followed is counted by kind, and each map
/// refresh by outcome.
struct ClusterMetricsTests {
    @Test(.timeLimit(.minutes(3)), arguments: TestLoops.Kind.allCases)
    func redirectionsAndMapRefreshesAreCounted(_ loop: TestLoops.Kind) async throws {
        let port = Box(Atomic<Int>(0))
        let seen = Box(Mutex<[String: Int]>([:]))
        // One node that serves every slot; the first GET of "moved" and of "ask" is redirected to itself.
        let node = try ScriptedRedis { command, _ in
            let p = port.value.load(ordering: .relaxed)
            switch command.first?.uppercased() ?? "" {
            case "CLUSTER":
                return .reply("*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:\(p)\r\n$40\r\n\(String(repeating: "a", count: 40))\r\n")
            case "GET":
                let key = command.count > 1 ? command[1] : ""
                let n = seen.value.locked { m -> Int in
                    m[key, default: 0] += 1
                    return m[key] ?? 0
                }
                let slot = ClusterSlot.of(Array(key.utf8))
                if key.hasSuffix("moved"), n == 1 { return .reply("-MOVED \(slot) 127.0.0.1:\(p)\r\n") }
                if key.hasSuffix("ask"), n == 1 { return .reply("-ASK \(slot) 127.0.0.1:\(p)\r\n") }
                return .reply("$1\r\nv\r\n")
            default:
                return .reply("+OK\r\n")
            }
        }
        port.value.store(node.port, ordering: .relaxed)
        defer { node.stop() }
        let metrics = TestMetrics()
        let cache = try BackendRegistry.standard.makeCache(
            alias: "cluster-metrics",
            settings: CacheSettings(backend: "redis", location: ["redis+cluster://127.0.0.1:\(node.port)"],
                                    options: ["CONNECT_TIMEOUT": 10, "COMMAND_TIMEOUT": 10], metricsFactory: metrics),
            loop: loop.loop)
        defer { cache.close() }
        #expect(try await cache.async.get("moved") as String? == "v")
        #expect(try await onPlainThread { try cache.get("ask") as String? } == "v")
        let dims = [("db.system.name", "redis"), ("tandem.cluster", "redis+cluster://127.0.0.1:\(node.port)")]
        #expect(try metrics.expectCounter("tandem.redis.cluster.redirects", dims + [("kind", "MOVED")]).totalValue == 1)
        #expect(try metrics.expectCounter("tandem.redis.cluster.redirects", dims + [("kind", "ASK")]).totalValue == 1)
        #expect(try metrics.expectCounter("tandem.redis.cluster.map_refreshes", dims + [("outcome", "ok")]).totalValue >= 1)
        #expect(try metrics.expectCounter("tandem.redis.cluster.map_refreshes", dims + [("outcome", "failed")]).totalValue == 0)
    }
}
