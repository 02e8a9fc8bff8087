import Foundation
import Tandem
@testable import TandemRedis
import TandemTestSupport
import Testing

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

    @Test func malformedClusterLocationsAreRefused() throws {
        for bad in ["redis+cluster://127.0.0.1:7000/3", "redis+cluster://127.0.0.1:x", "redis+cluster://127.0.0.1:1,,127.0.0.1:2"] {
            do {
                _ = try BackendRegistry.standard.makeCache(alias: "c", settings: CacheSettings(backend: "redis", location: [bad]), loop: nil)
                Issue.record("\(bad) was accepted")
            } catch CacheError.invalidSetting(_, let field, _) {
                #expect(field == "LOCATION", "\(bad)")
            }
        }
        do {
            _ = try BackendRegistry.standard.makeCache(
                alias: "c", settings: CacheSettings(backend: "redis", location: ["redis+cluster://127.0.0.1:7000", "redis://127.0.0.1:6379"]), loop: nil)
            Issue.record("a cluster location next to another was accepted")
        } catch CacheError.invalidSetting(_, let field, _) {
            #expect(field == "LOCATION")
        }
        let json = #"{"default": {"BACKEND": "redis", "LOCATION": "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"}}"#
        let cache = try Caches(json: Data(json.utf8)).default
        #expect(cache.backend.backendDescription == "redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
    }
}
