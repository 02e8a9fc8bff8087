import Testing
import Foundation
import Synchronization
import Tandem
@_spi(Backend) import TandemCache

/// What the shared semantic suite needs from a backend under test.
public protocol CacheFixture: Sendable {
    /// False for the Dummy backend, which stores nothing.
    var stores: Bool { get }
    /// True when the backend culls at MAX_ENTRIES (LocMem).
    var culls: Bool { get }
    /// True when invalid keys are rejected (memcached) rather than warned about.
    var strictKeys: Bool { get }
    /// Makes a cache on this fixture's storage; caches made by one fixture share it.
    func makeCache(_ configure: (inout CacheSettings) -> Void) throws -> Cache
    /// Lets `seconds` pass for the backend (a manual clock, or a real wait).
    func passTime(_ seconds: Double) async throws
    /// A prefix the fixture puts in front of every made key, to isolate concurrent runs on a shared
    /// server without databases (memcached); "" when the fixture isolates otherwise.
    var keyNamespace: String { get }
}

extension CacheFixture {
    public var keyNamespace: String { "" }
    /// A cache with the fixture's default settings.
    public func makeCache() throws -> Cache { try makeCache { _ in } }
    /// The default cache seen through `kind`.
    public func face(_ kind: FaceKind, _ configure: (inout CacheSettings) -> Void = { _ in }) throws -> Face {
        Face(try makeCache(configure), kind)
    }
}

/// A Codable value for the data-type behaviours.
public struct Poll: Codable, Sendable, Equatable {
    public var question: String
    public var answers: [Int]
    public var when: Double?
    public init(question: String, answers: [Int], when: Double? = nil) {
        self.question = question
        self.answers = answers
        self.when = when
    }
}

/// Django's cache test suite (`BaseCacheTests`), ported as behaviours that run against any backend
/// in both faces. Each behaviour gets a fresh fixture.
public enum SemanticSuite {
    public typealias Body = @Sendable (any CacheFixture, FaceKind) async throws -> Void

    /// One behaviour: a name and its body.
    public struct Behaviour: Sendable {
        public let name: String
        public let body: Body
    }

    /// The names of every behaviour, for parameterised tests.
    public static var names: [String] { behaviours.map(\.name) }

    /// Runs one behaviour by name.
    public static func run(_ name: String, fixture: any CacheFixture, face: FaceKind) async throws {
        guard let b = behaviours.first(where: { $0.name == name }) else {
            throw CheckFailure(message: "no behaviour named \(name)", location: #fileID)
        }
        try await b.body(fixture, face)
    }

    static func isMissingKey(_ e: any Error) -> Bool { (e as? CacheError)?.code == .missingKey }
    static func isNotInteger(_ e: any Error) -> Bool { (e as? CacheError)?.code == .notAnInteger }
    static func isInvalidArgument(_ e: any Error) -> Bool { (e as? CacheError)?.code == .invalidArgument }
    static func isInvalidKey(_ e: any Error) -> Bool { (e as? CacheError)?.code == .invalidKey }

    public static let behaviours: [Behaviour] = [
        Behaviour(name: "simple set and get") { fx, k in
            let c = try fx.face(k)
            try await c.set("key", "value")
            try #require(try await c.get("key", as: String.self) == (fx.stores ? "value" : nil))
        },
        Behaviour(name: "a stored null is a value, not a miss") { fx, k in
            let c = try fx.face(k)
            try await c.set("null", String?.none)
            let v = try await c.get("null", as: String?.self)
            try #require(v == (fx.stores ? .some(nil) : nil), "get as String?")
            try #require(try await c.hasKey("null") == fx.stores, "hasKey")
            try #require(try await c.get("null", default: Optional("default")) == (fx.stores ? nil : "default"), "get with default")
            try #require(try await c.get("null", as: String.self) == nil, "get as non-optional String")
        },
        Behaviour(name: "add never overwrites") { fx, k in
            let c = try fx.face(k)
            try #require(try await c.add("addkey1", "value") == true, "first add")
            try #require(try await c.add("addkey1", "newvalue") == (!fx.stores), "second add")
            try #require(try await c.get("addkey1", as: String.self) == (fx.stores ? "value" : nil))
        },
        Behaviour(name: "key prefix isolates caches on one store") { fx, k in
            let plain = try fx.face(k)
            let prefixed = try fx.face(k) { $0.keyPrefix = "cacheprefix" }
            try await plain.set("somekey", "value")
            try #require(try await prefixed.hasKey("somekey") == false, "prefixed sees plain key")
            try await prefixed.set("somekey", "other")
            try #require(try await plain.get("somekey", as: String.self) == (fx.stores ? "value" : nil))
            try #require(try await prefixed.get("somekey", as: String.self) == (fx.stores ? "other" : nil))
        },
        Behaviour(name: "non-existent key gives nil or the default") { fx, k in
            let c = try fx.face(k)
            try #require(try await c.get("does_not_exist", as: String.self) == nil)
            try #require(try await c.get("does_not_exist", default: "bang!") == ("bang!"))
            try #require(try await c.get("does_not_exist", default: 42) == 42)
        },
        Behaviour(name: "get-many returns only existing keys") { fx, k in
            let c = try fx.face(k)
            try await c.set("a", "a")
            try await c.set("b", "b")
            try await c.set("c", "c")
            let m = try await c.getMany(["a", "c", "d"], as: String.self)
            try #require(m == (fx.stores ? ["a": "a", "c": "c"] : [:]))
            try #require(try await c.getMany([], as: String.self) == [:], "empty get-many")
        },
        Behaviour(name: "get-many includes stored nulls") { fx, k in
            let c = try fx.face(k)
            try await c.set("x", String?.none)
            try await c.set("y", Optional("y"))
            let m = try await c.getMany(["x", "y", "z"], as: String?.self)
            try #require(m == (fx.stores ? ["x": nil, "y": "y"] : [:]))
        },
        Behaviour(name: "delete reports whether the key existed") { fx, k in
            let c = try fx.face(k)
            try await c.set("key1", "spam")
            try await c.set("key2", "eggs")
            try #require(try await c.delete("key1") == fx.stores, "delete existing")
            try #require(try await c.get("key1", as: String.self) == nil)
            try #require(try await c.get("key2", as: String.self) == (fx.stores ? "eggs" : nil))
            try #require(try await c.delete("key1") == false, "delete missing")
        },
        Behaviour(name: "has-key") { fx, k in
            let c = try fx.face(k)
            try await c.set("hello1", "goodbye1")
            try #require(try await c.hasKey("hello1") == fx.stores)
            try #require(try await c.hasKey("goodbye1") == false)
        },
        Behaviour(name: "incr and decr with deltas") { fx, k in
            let c = try fx.face(k)
            try await c.set("answer", 41)
            guard fx.stores else {
                try await checkThrows("incr on dummy", { try await c.incr("answer") }, matches: isMissingKey)
                return
            }
            try #require(try await c.incr("answer") == 42)
            try #require(try await c.get("answer", as: Int.self) == 42)
            try #require(try await c.incr("answer", by: 10) == 52)
            try #require(try await c.incr("answer", by: -10) == 42)
            try #require(try await c.decr("answer") == 41)
            try #require(try await c.decr("answer", by: 10) == 31)
            try #require(try await c.decr("answer", by: -10) == 41)
            try #require(try await c.get("answer", as: String.self) == "41", "stored as decimal text")
        },
        Behaviour(name: "incr of a missing key is an error") { fx, k in
            let c = try fx.face(k)
            try await checkThrows("incr missing", { try await c.incr("does_not_exist") }, matches: isMissingKey)
            try await checkThrows("decr missing", { try await c.decr("does_not_exist") }, matches: isMissingKey)
            try #require(try await c.hasKey("does_not_exist") == false, "incr must not create the key")
        },
        Behaviour(name: "incr of a non-integer is a typed error") { fx, k in
            let c = try fx.face(k)
            guard fx.stores else { return }
            try await c.set("text", "not a number")
            try await checkThrows("incr text", { try await c.incr("text") }, matches: isNotInteger)
            try #require(try await c.get("text", as: String.self) == ("not a number"), "value untouched")
        },
        Behaviour(name: "deltas that cannot be applied are refused before any I/O") { fx, k in
            let c = try fx.face(k)
            try await c.set("answer", 7)
            // Int.min has no negation; a version shift past Int.max overflows. Both used to trap.
            try await checkThrows("decr by Int.min", { try await c.decr("answer", by: .min) }, matches: isInvalidArgument)
            try await checkThrows("decrVersion by Int.min", { try await c.decrVersion("answer", by: .min) }, matches: isInvalidArgument)
            try await checkThrows("incrVersion past Int.max", { try await c.incrVersion("answer", by: .max, version: 2) },
                                  matches: isInvalidArgument)
            guard fx.stores else { return }
            try #require(try await c.get("answer", as: Int.self) == 7, "the value is untouched")
            // A delta that does fit is applied in one step, whatever its size.
            try #require(try await c.incr("answer", by: 5_000_000_000) == 5_000_000_007)
            try #require(try await c.decr("answer", by: 5_000_000_000) == 7)
        },
        Behaviour(name: "data types round-trip") { fx, k in
            let c = try fx.face(k)
            guard fx.stores else { return }
            let poll = Poll(question: "What's up?", answers: [1, 2, 3], when: 1.5)
            try await c.set("string", "text")
            try await c.set("int", -7)
            try await c.set("int8", Int8(-8))
            try await c.set("uint64", UInt64.max)
            try await c.set("double", 3.25)
            try await c.set("bool", true)
            try await c.set("bytes", [UInt8]([0, 1, 2, 255]))
            try await c.set("data", Data([9, 8, 7]))
            try await c.set("poll", poll)
            try await c.set("list", ["a", "b"])
            try await c.set("dict", ["k": 1])
            try #require(try await c.get("string", as: String.self) == "text")
            try #require(try await c.get("int", as: Int.self) == -7)
            try #require(try await c.get("int8", as: Int8.self) == -8)
            try #require(try await c.get("uint64", as: UInt64.self) == UInt64.max)
            try #require(try await c.get("double", as: Double.self) == 3.25)
            try #require(try await c.get("bool", as: Bool.self) == true)
            try #require(try await c.get("bytes", as: [UInt8].self) == ([0, 1, 2, 255]))
            try #require(try await c.get("data", as: Data.self) == (Data([9, 8, 7])))
            try #require(try await c.get("poll", as: Poll.self) == poll)
            try #require(try await c.get("list", as: [String].self) == (["a", "b"]))
            try #require(try await c.get("dict", as: [String: Int].self) == (["k": 1]))
            try await checkThrows("text read as Int", { try await c.get("string", as: Int.self) }) { e in
                return (e as? CacheError)?.code == .decodingFailed
            }
        },
        Behaviour(name: "expiration") { fx, k in
            let c = try fx.face(k)
            try await c.set("expire1", "very quickly", timeout: .seconds(1))
            try await c.set("expire2", "very quickly", timeout: .seconds(1))
            try await c.set("expire3", "very quickly", timeout: .seconds(1))
            try await fx.passTime(2)
            try #require(try await c.get("expire1", as: String.self) == nil)
            try #require(try await c.add("expire2", "newvalue") == true, "add over an expired key")
            try #require(try await c.get("expire2", as: String.self) == (fx.stores ? "newvalue" : nil))
            try #require(try await c.hasKey("expire3") == false)
        },
        Behaviour(name: "touch") { fx, k in
            let c = try fx.face(k)
            let w1 = AliveWindow(2.5)
            try await c.set("expire1", "quickly", timeout: .seconds(3))
            let w1b = AliveWindow(7.5)
            let touched1 = try await c.touch("expire1", timeout: .seconds(8))
            try w1.checkEqual(touched1, fx.stores)
            try await fx.passTime(4)
            try w1b.checkEqual(try await c.hasKey("expire1"), touched1, "touched key lives on")
            try await fx.passTime(5)
            try #require(try await c.hasKey("expire1") == false, "touched key expires")
            let w2 = AliveWindow(2.5)
            try await c.set("expire2", "quickly", timeout: .seconds(3))
            let touched2 = try await c.touch("expire2", timeout: .never)
            try w2.checkEqual(touched2, fx.stores)
            try await fx.passTime(4)
            try #require(try await c.hasKey("expire2") == touched2, "touched forever")
            try #require(try await c.touch("nonexistent") == false, "touch missing")
            try await c.set("expire3", "x")
            try #require(try await c.touch("expire3", timeout: .seconds(0)) == fx.stores, "touch with 0")
            try #require(try await c.hasKey("expire3") == false, "touch with 0 expires")
        },
        Behaviour(name: "unicode keys and values") { fx, k in
            let c = try fx.face(k)
            let stuff: [String: String] = [
                "ascii": "ascii_value",
                "unicode_ascii": "Iñtërnâtiônàlizætiøn1",
                "Iñtërnâtiônàlizætiøn": "Iñtërnâtiônàlizætiøn2",
                "ascii2": "{'x' : 1 }",
                "日本語": "値 🎉",
            ]
            for (key, value) in stuff {
                try await c.set(key, value)
                try #require(try await c.get(key, as: String.self) == (fx.stores ? value : nil), "\(key)")
                try await c.delete(key)
                try #require(try await c.get(key, as: String.self) == nil)
                try await c.add(key, value)
                try #require(try await c.get(key, as: String.self) == (fx.stores ? value : nil), "\(key)")
            }
            try await c.setMany(stuff)
            try #require(try await c.getMany(Array(stuff.keys), as: String.self) == (fx.stores ? stuff : [:]))
        },
        Behaviour(name: "binary values") { fx, k in
            let c = try fx.face(k)
            let all = [UInt8]((0...255).map { UInt8($0) })
            try await c.set("binary1", all)
            try #require(try await c.get("binary1", as: [UInt8].self) == (fx.stores ? all : nil))
            try await c.add("binary1-add", all)
            try #require(try await c.get("binary1-add", as: [UInt8].self) == (fx.stores ? all : nil))
            try await c.setMany(["binary1-set_many": all])
            try #require(try await c.get("binary1-set_many", as: [UInt8].self) == (fx.stores ? all : nil))
            if fx.stores {
                try await checkThrows("binary read as String", { try await c.get("binary1", as: String.self) }) { e in
                    return (e as? CacheError)?.code == .decodingFailed
                }
            }
        },
        Behaviour(name: "set-many stores all and reports no failures") { fx, k in
            let c = try fx.face(k)
            let failed = try await c.setMany(["key1": "spam", "key2": "eggs"])
            try #require(failed == [])
            try #require(try await c.get("key1", as: String.self) == (fx.stores ? "spam" : nil))
            try #require(try await c.get("key2", as: String.self) == (fx.stores ? "eggs" : nil))
        },
        Behaviour(name: "set-many with a timeout") { fx, k in
            let c = try fx.face(k)
            try await c.setMany(["key1": "spam", "key2": "eggs"], timeout: .seconds(2))
            try await fx.passTime(3)
            try #require(try await c.get("key1", as: String.self) == nil)
            try #require(try await c.get("key2", as: String.self) == nil)
            try await c.set("key3", "old")
            try #require(try await c.setMany(["key3": "new"], timeout: .seconds(0)) == [], "expire-now set-many")
            try #require(try await c.get("key3", as: String.self) == nil, "expire-now set-many removes the old value")
        },
        Behaviour(name: "delete-many") { fx, k in
            let c = try fx.face(k)
            try await c.setMany(["key1": "spam", "key2": "eggs", "key3": "ham"])
            try await c.deleteMany(["key1", "key2", "missing"])
            try #require(try await c.get("key1", as: String.self) == nil)
            try #require(try await c.get("key2", as: String.self) == nil)
            try #require(try await c.get("key3", as: String.self) == (fx.stores ? "ham" : nil))
            try await c.deleteMany([])
        },
        Behaviour(name: "clear") { fx, k in
            let c = try fx.face(k)
            try await c.set("key1", "spam")
            try await c.set("key2", "eggs")
            try await c.clear()
            try #require(try await c.get("key1", as: String.self) == nil)
            try #require(try await c.get("key2", as: String.self) == nil)
        },
        Behaviour(name: "long timeout (a year, over 30 days)") { fx, k in
            let c = try fx.face(k)
            try await c.set("key1", "eggs", timeout: .seconds(60 * 60 * 24 * 365))
            try #require(try await c.get("key1", as: String.self) == (fx.stores ? "eggs" : nil))
            try #require(try await c.add("key2", "ham", timeout: .seconds(60 * 60 * 24 * 31)) == true)
            try #require(try await c.get("key2", as: String.self) == (fx.stores ? "ham" : nil))
            try await c.setMany(["key3": "sausage", "key4": "lobster bisque"], timeout: .seconds(60 * 60 * 24 * 40))
            try #require(try await c.get("key4", as: String.self) == (fx.stores ? "lobster bisque" : nil))
            try await fx.passTime(2)
            try #require(try await c.get("key3", as: String.self) == (fx.stores ? "sausage" : nil))
        },
        Behaviour(name: "forever timeout") { fx, k in
            let c = try fx.face(k)
            try await c.set("key1", "eggs", timeout: .never)
            try #require(try await c.add("key2", "ham", timeout: .never) == true)
            try await c.setMany(["key3": "sausage"], timeout: .never)
            let w = AliveWindow(2.5)
            try await c.set("key4", "tart", timeout: .seconds(3))
            let touched = try await c.touch("key4", timeout: .never)
            try w.checkEqual(touched, fx.stores)
            try await fx.passTime(5)
            for (key, value) in [("key1", "eggs"), ("key2", "ham"), ("key3", "sausage")] {
                try #require(try await c.get(key, as: String.self) == (fx.stores ? value : nil), "\(key)")
            }
            try #require(try await c.get("key4", as: String.self) == (touched ? "tart" : nil), "touched to forever")
        },
        Behaviour(name: "zero timeout stores nothing") { fx, k in
            let c = try fx.face(k)
            try await c.set("key1", "eggs", timeout: .seconds(0))
            try #require(try await c.get("key1", as: String.self) == nil)
            try #require(try await c.add("key2", "ham", timeout: .seconds(0)) == true, "add with 0 on an absent key returns true (it was absent)")
            try #require(try await c.get("key2", as: String.self) == nil)
            try await c.setMany(["key3": "sausage"], timeout: .seconds(0))
            try #require(try await c.get("key3", as: String.self) == nil)
            try await c.set("key5", "old")
            try await c.set("key5", "new", timeout: .seconds(0))
            try #require(try await c.get("key5", as: String.self) == nil, "set with 0 removes the old value")
            try await c.set("key6", "live")
            try #require(try await c.add("key6", "x", timeout: .seconds(0)) == (!fx.stores), "add with 0 on a live key")
        },
        Behaviour(name: "negative timeout expires at once") { fx, k in
            let c = try fx.face(k)
            try await c.set("key1", "eggs", timeout: .seconds(-1))
            try #require(try await c.get("key1", as: String.self) == nil)
            try #require(try await c.hasKey("key1") == false)
        },
        Behaviour(name: "float timeout") { fx, k in
            let c = try fx.face(k)
            try await c.set("key1", "spam", timeout: .seconds(100.2))
            try #require(try await c.get("key1", as: String.self) == (fx.stores ? "spam" : nil))
            let w = AliveWindow(3.2)
            try await c.set("key2", "short", timeout: .seconds(3.5))
            try await fx.passTime(0.5)
            try w.checkEqual(try await c.get("key2", as: String.self), fx.stores ? "short" : nil, "before 3.5 s")
            try await fx.passTime(4)
            try #require(try await c.get("key2", as: String.self) == nil, "after 3.5 s")
        },
        Behaviour(name: "default timeout from settings") { fx, k in
            let c = try fx.face(k) { $0.timeout = .seconds(2) }
            let w = AliveWindow(1.7)
            try await c.set("key1", "spam")
            try w.checkEqual(try await c.get("key1", as: String.self), fx.stores ? "spam" : nil)
            try await fx.passTime(3)
            try #require(try await c.get("key1", as: String.self) == nil)
            let forever = try fx.face(k) { $0.timeout = .never }
            try await forever.set("key2", "forever")
            try await fx.passTime(2)
            try #require(try await forever.get("key2", as: String.self) == (fx.stores ? "forever" : nil))
        },
        Behaviour(name: "culling removes a third, least recently used first") { fx, k in
            guard fx.culls else { return }
            let c = try fx.face(k) { $0.options = ["MAX_ENTRIES": 30] }
            for i in 1..<50 { try await c.set("cull\(i)", "value", timeout: .seconds(1000)) }
            var count = 0
            for i in 1..<50 where try await c.hasKey("cull\(i)") { count += 1 }
            try #require(count == 29, "entries left after 49 inserts")
            // LRU: touch the oldest survivor, then force a cull; it must survive.
            let survivors = try await c.getMany((1..<50).map { "cull\($0)" }, as: String.self)
            guard let oldest = (1..<50).map({ "cull\($0)" }).first(where: { survivors[$0] != nil }) else {
                throw CheckFailure(message: "no survivors", location: "culling")
            }
            _ = try await c.get(oldest, as: String.self)
            for i in 50..<52 { try await c.set("cull\(i)", "value") }
            try #require(try await c.hasKey(oldest) == true, "recently read entry survives a cull")
        },
        Behaviour(name: "zero cull frequency clears everything") { fx, k in
            guard fx.culls else { return }
            let c = try fx.face(k) { $0.options = ["MAX_ENTRIES": 30, "CULL_FREQUENCY": 0] }
            for i in 1..<50 { try await c.set("cull\(i)", "value", timeout: .seconds(1000)) }
            var count = 0
            for i in 1..<50 where try await c.hasKey("cull\(i)") { count += 1 }
            try #require(count == 19, "entries left after 49 inserts")
        },
        Behaviour(name: "invalid key characters") { fx, k in
            let c = try fx.face(k)
            for key in ["key with spaces", "key\nwith\nnewlines", "key\u{7f}del", "nul\u{0}key", "tab\tkey", "cr\rlf"] {
                if fx.strictKeys {
                    try await checkThrows("set \(key.debugDescription)", { try await c.set(key, "value") }, matches: isInvalidKey)
                    try await checkThrows("get \(key.debugDescription)", { try await c.get(key, as: String.self) }, matches: isInvalidKey)
                } else {
                    try await c.set(key, "value")
                    try #require(try await c.get(key, as: String.self) == (fx.stores ? "value" : nil), "\(key.debugDescription)")
                }
            }
        },
        Behaviour(name: "invalid key length") { fx, k in
            let c = try fx.face(k)
            let key = String(repeating: "a", count: 251)
            let ok = String(repeating: "b", count: 250 - ":1:".count - fx.keyNamespace.utf8.count)
            try await c.set(ok, "fits")
            try #require(try await c.get(ok, as: String.self) == (fx.stores ? "fits" : nil), "a 250-byte key")
            if fx.strictKeys {
                try await checkThrows("251-byte key", { try await c.set(key, "value") }, matches: isInvalidKey)
                try await checkThrows("251-byte key via set-many", { try await c.setMany([key: "v"]) }, matches: isInvalidKey)
            } else {
                try await c.set(key, "value")
                try #require(try await c.get(key, as: String.self) == (fx.stores ? "value" : nil))
            }
        },
        Behaviour(name: "versioning of get and set") { fx, k in
            let c = try fx.face(k)
            let c2 = try fx.face(k) { $0.version = 2 }
            try await c.set("answer1", 42)
            try #require(try await c.get("answer1", as: Int.self) == (fx.stores ? 42 : nil))
            try #require(try await c.get("answer1", as: Int.self, version: 1) == (fx.stores ? 42 : nil))
            try #require(try await c.get("answer1", as: Int.self, version: 2) == nil)
            try #require(try await c2.get("answer1", as: Int.self) == nil)
            try #require(try await c2.get("answer1", as: Int.self, version: 1) == (fx.stores ? 42 : nil))
            try await c.set("answer2", 42, version: 2)
            try #require(try await c.get("answer2", as: Int.self) == nil)
            try #require(try await c2.get("answer2", as: Int.self) == (fx.stores ? 42 : nil))
            try await c2.set("answer3", 42)
            try #require(try await c.get("answer3", as: Int.self, version: 2) == (fx.stores ? 42 : nil))
            try #require(try await c.get("answer3", as: Int.self) == nil)
        },
        Behaviour(name: "versioning of add") { fx, k in
            let c = try fx.face(k)
            let c2 = try fx.face(k) { $0.version = 2 }
            try await c.add("answer1", 42, version: 2)
            try #require(try await c.add("answer1", 37, version: 2) == (!fx.stores))
            try #require(try await c.add("answer1", 37, version: 1) == true)
            try #require(try await c.get("answer1", as: Int.self, version: 1) == (fx.stores ? 37 : nil))
            try #require(try await c2.get("answer1", as: Int.self) == (fx.stores ? 42 : nil))
        },
        Behaviour(name: "versioning of has-key") { fx, k in
            let c = try fx.face(k)
            try await c.set("answer1", 42)
            try #require(try await c.hasKey("answer1") == fx.stores)
            try #require(try await c.hasKey("answer1", version: 1) == fx.stores)
            try #require(try await c.hasKey("answer1", version: 2) == false)
        },
        Behaviour(name: "versioning of delete") { fx, k in
            let c = try fx.face(k)
            try await c.set("answer1", 37, version: 1)
            try await c.set("answer1", 42, version: 2)
            try #require(try await c.delete("answer1") == fx.stores)
            try #require(try await c.get("answer1", as: Int.self, version: 1) == nil)
            try #require(try await c.get("answer1", as: Int.self, version: 2) == (fx.stores ? 42 : nil))
            try #require(try await c.delete("answer1", version: 2) == fx.stores)
            try #require(try await c.get("answer1", as: Int.self, version: 2) == nil)
        },
        Behaviour(name: "versioning of incr and decr") { fx, k in
            let c = try fx.face(k)
            guard fx.stores else { return }
            try await c.set("answer1", 37, version: 1)
            try await c.set("answer1", 42, version: 2)
            try #require(try await c.incr("answer1") == 38)
            try #require(try await c.get("answer1", as: Int.self, version: 2) == 42)
            try #require(try await c.decr("answer1", version: 2) == 41)
            try #require(try await c.get("answer1", as: Int.self, version: 1) == 38)
        },
        Behaviour(name: "versioning of get-many, set-many and delete-many") { fx, k in
            let c = try fx.face(k)
            let c2 = try fx.face(k) { $0.version = 2 }
            try await c.setMany(["ford1": 37, "arthur1": 42])
            try #require(try await c.getMany(["ford1", "arthur1"], as: Int.self) == (fx.stores ? ["ford1": 37, "arthur1": 42] : [:]))
            try #require(try await c.getMany(["ford1", "arthur1"], as: Int.self, version: 2) == [:])
            try #require(try await c2.getMany(["ford1", "arthur1"], as: Int.self, version: 1) == (fx.stores ? ["ford1": 37, "arthur1": 42] : [:]))
            try await c.setMany(["ford2": 37, "arthur2": 42], version: 2)
            try #require(try await c.getMany(["ford2", "arthur2"], as: Int.self) == [:])
            try #require(try await c2.getMany(["ford2", "arthur2"], as: Int.self) == (fx.stores ? ["ford2": 37, "arthur2": 42] : [:]))
            try await c.deleteMany(["ford2", "arthur2"])
            try #require(try await c2.getMany(["ford2", "arthur2"], as: Int.self) == (fx.stores ? ["ford2": 37, "arthur2": 42] : [:]), "delete-many at version 1 leaves version 2")
            try await c.deleteMany(["ford2", "arthur2"], version: 2)
            try #require(try await c2.getMany(["ford2", "arthur2"], as: Int.self) == [:])
        },
        Behaviour(name: "incr-version moves a key to the next version") { fx, k in
            let c = try fx.face(k)
            let c2 = try fx.face(k) { $0.version = 2 }
            try await c.set("answer", 42, version: 2)
            guard fx.stores else {
                try await checkThrows("incrVersion on dummy", { try await c.incrVersion("answer", version: 2) }, matches: isMissingKey)
                return
            }
            try #require(try await c2.incrVersion("answer") == 3)
            try #require(try await c.get("answer", as: Int.self, version: 2) == nil)
            try #require(try await c.get("answer", as: Int.self, version: 3) == 42)
            try #require(try await c.incrVersion("answer", by: 2, version: 3) == 5)
            try #require(try await c.get("answer", as: Int.self, version: 5) == 42)
            try await checkThrows("incrVersion missing", { try await c.incrVersion("does_not_exist") }, matches: isMissingKey)
        },
        Behaviour(name: "decr-version moves a key to the previous version") { fx, k in
            let c = try fx.face(k)
            guard fx.stores else { return }
            try await c.set("answer", 42, version: 2)
            try #require(try await c.decrVersion("answer", version: 2) == 1)
            try #require(try await c.get("answer", as: Int.self) == 42)
            try #require(try await c.get("answer", as: Int.self, version: 2) == nil)
            try await checkThrows("decrVersion missing", { try await c.decrVersion("does_not_exist", version: 2) }, matches: isMissingKey)
        },
        Behaviour(name: "custom key function isolates caches") { fx, k in
            let plain = try fx.face(k)
            let custom = try fx.face(k) { $0.keyFunction = { key, prefix, version in "CUSTOM-\(prefix)-\(version)-\(key)" } }
            try await plain.set("answer1", 42)
            try #require(try await custom.get("answer1", as: Int.self) == nil)
            try await custom.set("answer2", 42)
            try #require(try await plain.get("answer2", as: Int.self) == nil)
            try #require(try await custom.get("answer2", as: Int.self) == (fx.stores ? 42 : nil))
            try #require(custom.cache.makeKey("answer2") == (fx.keyNamespace + "CUSTOM--1-answer2"))
        },
        Behaviour(name: "get-or-set stores the default once") { fx, k in
            let c = try fx.face(k)
            let calls = CallCounter()
            try #require(try await c.getOrSet("projector") { calls.bump(); return 42 } == 42)
            try #require(try await c.getOrSet("projector") { calls.bump(); return 43 } == (fx.stores ? 42 : 43))
            try #require(calls.value == (fx.stores ? 1 : 2), "default computed only on a miss")
            try #require(try await c.get("projector", as: Int.self) == (fx.stores ? 42 : nil))
        },
        Behaviour(name: "get-or-set stores null") { fx, k in
            let c = try fx.face(k)
            let calls = CallCounter()
            try #require(try await c.getOrSet("null") { calls.bump(); return String?.none } == nil)
            try #require(try await c.getOrSet("null") { calls.bump(); return Optional("after") } == (fx.stores ? nil : "after"))
            try #require(calls.value == (fx.stores ? 1 : 2), "a stored null is a hit")
        },
        Behaviour(name: "get-or-set race: the stored value wins when add loses") { fx, k in
            let c = try fx.face(k)
            let other = try fx.makeCache()
            let key = other.makeKey("race")
            let v = try await c.getOrSet("race") {
                // Another writer stores a value between the miss and the add.
                _ = try other.backend.set(key, StoredValue(bytes: Array("winner".utf8), kind: .string), expiry: .never, mode: .set)
                return "loser"
            }
            try #require(v == (fx.stores ? "winner" : "loser"))
            try #require(try await c.get("race", as: String.self) == (fx.stores ? "winner" : nil))
        },
        Behaviour(name: "get-or-set runs the producer once for concurrent callers (single flight)") { fx, k in
            let c = try fx.face(k)
            let calls = CallCounter()
            let values = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<40 {
                    group.addTask {
                        try await c.getOrSet("flight") {
                            calls.bump()
                            Thread.sleep(forTimeInterval: 0.02)  // long enough for the others to join
                            return "computed"
                        }
                    }
                }
                return try await group.reduce(into: [String]()) { $0.append($1) }
            }
            try #require(values == (Array(repeating: "computed", count: 40)), "every caller got the value")
            // A backend that stores serves late callers from the cache; Dummy shares only the flight.
            try #require(fx.stores ? calls.value == 1 : calls.value >= 1, "producer runs: \(calls.value)")
        },
        Behaviour(name: "close leaves the cache usable") { fx, k in
            let c = try fx.face(k)
            try await c.set("before", "x")
            c.cache.close()
            try await c.set("after", "y")
            try #require(try await c.get("after", as: String.self) == (fx.stores ? "y" : nil))
            try #require(try await c.get("before", as: String.self) == (fx.stores ? "x" : nil))
        },
        Behaviour(name: "incr keeps the expiry") { fx, k in
            let c = try fx.face(k)
            guard fx.stores else { return }
            let w = AliveWindow(2.5)
            try await c.set("counter", 1, timeout: .seconds(3))
            do {
                try #require(try await c.incr("counter") == 2)
            } catch let error as CacheError where error.code == .missingKey && !w.isOpen {
                return  // the step came after the key's timeout: nothing to prove
            }
            try await fx.passTime(4)
            try #require(try await c.get("counter", as: Int.self) == nil, "incr must not make the key immortal")
        },
        Behaviour(name: "concurrent incr is atomic") { fx, k in
            let c = try fx.face(k)
            guard fx.stores else { return }
            try await c.set("hits", 0)
            try await withThrowingTaskGroup(of: Void.self) { g in
                for _ in 0..<8 { g.addTask { for _ in 0..<25 { try await c.incr("hits") } } }
                try await g.waitForAll()
            }
            try #require(try await c.get("hits", as: Int.self) == 200)
        },
        Behaviour(name: "keys longer with prefix and version are made Django's way") { fx, k in
            let c = try fx.face(k) { $0.keyPrefix = "shop"; $0.version = 3 }
            try #require(c.cache.makeKey("cart") == (fx.keyNamespace + "shop:3:cart"))
            try #require(c.cache.makeKey("cart", version: 7) == (fx.keyNamespace + "shop:7:cart"))
            try await c.set("cart", "x")
            try #require(try await c.get("cart", as: String.self, version: 3) == (fx.stores ? "x" : nil))
        },
    ]
}

/// Counts calls from `@Sendable` closures.
public final class CallCounter: Sendable {
    private let count = Mutex<Int>(0)
    public init() {}
    public func bump() { count.locked { $0 += 1 } }
    public var value: Int { count.locked { $0 } }
}
