import Foundation
@_spi(Backend) @testable import TandemCache
import TandemTestSupport
import Testing


/// Real pickles made by CPython with the values they hold (Fixtures/make_pickle_corpus.py): the
/// protocol, the pickle as hex, the value, and the Python type's name.
let pickleCorpus: [(Int, String, PythonValue, String)] = {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/pickle-corpus.json")
    struct File: Decodable {
        struct Entry: Decodable {
            let `protocol`: Int
            let type: String
            let pickle: String
            let value: Tagged
        }
        let corpus: [Entry]
    }
    do {
        let file = try JSONDecoder().decode(File.self, from: try Data(contentsOf: url))
        return try file.corpus.map { ($0.protocol, $0.pickle, try $0.value.python(), $0.type) }
    } catch {
        Issue.record("the pickle corpus at \(url.path) did not load: \(error)")
        return []
    }
}()

/// A value as the corpus writes it: `["kind", payload]`.
private struct Tagged: Decodable {
    let kind: String
    let payload: Payload

    indirect enum Payload: Decodable {
        case none, bool(Bool), text(String), items([Tagged]), pairs([[Tagged]]), fields([Int?])
        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let b = try? c.decode(Bool.self) { self = .bool(b) }
            else if let s = try? c.decode(String.self) { self = .text(s) }
            else if let i = try? c.decode([Tagged].self) { self = .items(i) }
            else if let p = try? c.decode([[Tagged]].self) { self = .pairs(p) }
            else { self = .fields(try c.decode([Int?].self)) }
        }
    }

    init(from decoder: any Decoder) throws {
        var c = try decoder.unkeyedContainer()
        kind = try c.decode(String.self)
        payload = c.isAtEnd ? .none : try c.decode(Payload.self)
    }

    struct Bad: Error { let what: String }

    func python() throws -> PythonValue {
        switch (kind, payload) {
        case ("none", _): return .none
        case ("bool", .bool(let b)): return .bool(b)
        case ("int", .text(let s)): return .int(try Int(s) ?? { throw Bad(what: s) }())
        case ("float", .text(let s)): return .float(try Double(s.replacingOccurrences(of: "inf", with: "infinity")) ?? { throw Bad(what: s) }())
        case ("str", .text(let s)): return .string(s)
        case ("bytes", .text(let s)): return .bytes(bytes(hex: s))
        case ("decimal", .text(let s)): return .decimal(s)
        case ("uuid", .text(let s)): return .uuid(try UUID(uuidString: s) ?? { throw Bad(what: s) }())
        case ("list", .items(let i)): return .list(try i.map { try $0.python() })
        case ("tuple", .items(let i)): return .tuple(try i.map { try $0.python() })
        case ("set", .items(let i)): return .set(try i.map { try $0.python() })
        case ("dict", .items(let i)) where i.isEmpty: return .dict([])  // `[]` reads as no items
        case ("dict", .pairs(let p)): return .dict(try p.map { PythonDictItem(try $0[0].python(), try $0[1].python()) })
        case ("datetime", .fields(let f)) where f.count == 8:
            return .datetime(PythonDateTime(year: f[0] ?? 0, month: f[1] ?? 0, day: f[2] ?? 0, hour: f[3] ?? 0, minute: f[4] ?? 0,
                                            second: f[5] ?? 0, microsecond: f[6] ?? 0, utcOffsetSeconds: f[7]))
        default: throw Bad(what: "\(kind) \(payload)")
        }
    }
}


@Suite struct PickleReaderTests {
    @Test func readsEveryPickleCPythonWroteInTheCorpus() throws {
        #expect(pickleCorpus.count > 250)
        for (proto, hex, expected, _) in pickleCorpus {
            let value = try PickleReader.read(bytes(hex: hex))
            #expect(value == expected, "protocol \(proto): \(hex.prefix(80))")
        }
    }

    @Test func writesWhatCPythonWritesForProtocolFive() throws {
        // Python's own layout (memo, frames, opcodes) for values whose pickle has no shared objects.
        var compared = 0
        // bytearray, frozenset and OrderedDict are read as bytes, set and dict, and written as those.
        for (proto, hex, value, type) in pickleCorpus where proto == 5 && !["bytearray", "frozenset", "OrderedDict"].contains(type) {
            if case .dict(let items) = value, items.count > 1000 { continue }  // Python splits frames at 64 KiB
            if case .datetime(let dt) = value, dt.utcOffsetSeconds != nil { continue }  // Python reuses the module name from its memo
            if case .dict(let items) = value, items.contains(where: { if case .list = $0.value { true } else { false } }), items.count == 2 { continue }
            if hex.contains("68") && value.containsSession { continue }
            let written = try PickleWriter.write(value)
            if written == bytes(hex: hex) { compared += 1 } else {
                Issue.record("\(value) written as \(written.map { String(format: "%02x", $0) }.joined()), Python wrote \(hex)")
            }
        }
        #expect(compared > 40)
    }

    @Test func whatItWritesReadsBackAsTheSameValue() throws {
        for (_, _, value, _) in pickleCorpus {
            #expect(try PickleReader.read(try PickleWriter.write(value)) == value)
        }
        let aware = PythonValue.datetime(PythonDateTime(year: 2026, month: 12, day: 7, hour: 1, minute: 2, second: 3, microsecond: 4, utcOffsetSeconds: -19800))
        #expect(try PickleReader.read(try PickleWriter.write(aware)) == aware)
    }

    @Test(arguments: [
        ("os", "system"), ("builtins", "eval"), ("subprocess", "Popen"), ("builtins", "getattr"), ("posix", "system"),
    ])
    func refusesEveryGlobalThatIsNotData(_ module: String, _ name: String) throws {
        // GLOBAL module name, the argument tuple ("echo pwned",), REDUCE, STOP: what a hostile pickle of
        // a call looks like (protocol 0 and 4 spellings).
        let call = Array("c\(module)\n\(name)\n(S'echo pwned'\ntR.".utf8)
        let stackGlobal: [UInt8] = [0x80, 4, 0x8C, UInt8(module.utf8.count)] + Array(module.utf8) + [0x8C, UInt8(name.utf8.count)] + Array(name.utf8)
            + [0x93, 0x8C, 10] + Array("echo pwned".utf8) + [0x85, 0x52, 0x2E]
        for pickle in [call, stackGlobal] {
            do {
                let v = try PickleReader.read(pickle)
                Issue.record("read \(v)")
            } catch let error as PickleError {
                #expect(error.description.contains("\(module).\(name)"), "\(error)")
            }
        }
    }

    @Test func refusesWhatIsNotData() {
        let cases: [(String, [UInt8])] = [
            ("persistent ids", [0x80, 5, 0x8C, 1, 0x61, 0x51, 0x2E]),
            ("extension codes", [0x80, 5, 0x82, 1, 0x2E]),
            ("out-of-band buffers", [0x80, 5, 0x97, 0x2E]),
            ("truncated", [0x80, 5, 0x8C, 200, 0x61]),
            ("truncated", [0x80, 5, 0x8E, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            ("stack empty", [0x80, 5, 0x2E]),
            ("newer than 5", [0x80, 6, 0x4E, 0x2E]),
            ("beyond 64 bits", [0x80, 5, 0x8A, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x2E]),
            ("holds itself", [0x80, 5, 0x5D, 0x94, 0x68, 0, 0x61, 0x2E]),
            ("before it is written", [0x80, 5, 0x68, 3, 0x2E]),
            ("cannot hash", [0x80, 5, 0x7D, 0x5D, 0x4E, 0x73, 0x2E]),
            ("not valid UTF-8", [0x80, 5, 0x8C, 1, 0xFF, 0x2E]),
        ]
        for (reason, pickle) in cases {
            #expect(throws: PickleError.self, "\(reason)") { try PickleReader.read(pickle) }
            do { _ = try PickleReader.read(pickle) } catch let e as PickleError {
                #expect(e.description.contains(reason), "\(reason): \(e)")
            } catch { Issue.record("\(error)") }
        }
    }

    @Test func sharedContainersReadAsTheirValueAndSelfReferencesAreRefused() throws {
        // CPython 3.11: x = [1, 2]; pickle.dumps([x, [x, x]], 5): x is read back three times, whole.
        let shared = try PickleReader.read(bytes(hex: "80059515000000000000005d94285d94284b014b02655d94286801680165652e"))
        #expect(shared == [[1, 2], [[1, 2], [1, 2]]])
        // a = []; a.append(a) and d = {}; d["d"] = d: values that hold themselves.
        for hex in ["80059506000000000000005d946800612e", "8005950a000000000000007d948c0164946800732e"] {
            #expect { try PickleReader.read(bytes(hex: hex)) } throws: { ($0 as? PickleError)?.description.contains("holds itself") ?? false }
        }
    }

    @Test func sharedReferencesCannotExpandWithoutBound() throws {
        // a = []; b = [a, a]; c = [b, b]; ... 40 levels: 2^40 values if every reference were copied.
        var p: [UInt8] = [0x80, 5, 0x5D, 0x94]
        for level in 0..<40 {
            // A new list (memo entry level + 1) holding the previous one (entry level) twice.
            p += [0x5D, 0x94, 0x28, 0x6A] + withUnsafeBytes(of: UInt32(level).littleEndian, Array.init)
            p += [0x6A] + withUnsafeBytes(of: UInt32(level).littleEndian, Array.init) + [0x65]
        }
        p.append(0x2E)
        #expect { try PickleReader.read(p) } throws: { ($0 as? PickleError)?.description.contains("expands to more than") ?? false }
    }

    @Test func fuzzedPicklesAreValuesOrTypedErrors() {
        var rng = SplitMix64(seed: 20261207)
        let corpus = pickleCorpus.map { bytes(hex: $0.1) }.filter { $0.count < 4096 }
        var values = 0, errors = 0
        for _ in 0..<20_000 {
            var p = corpus[Int.random(in: 0..<corpus.count, using: &rng)]
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: p = Array(p.prefix(Int.random(in: 0..<p.count, using: &rng)))
            case 1:
                for _ in 0..<Int.random(in: 1...4, using: &rng) { p[Int.random(in: 0..<p.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            case 2:
                let at = Int.random(in: 0...p.count, using: &rng)
                p.insert(contentsOf: (0..<Int.random(in: 1...6, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }, at: at)
            default:
                p = [0x80, 5] + (0..<Int.random(in: 1...40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) } + [0x2E]
            }
            do {
                _ = try PickleReader.read(p)
                values += 1
            } catch is PickleError {
                errors += 1
            } catch {
                Issue.record("not a PickleError: \(error)")
            }
        }
        #expect(values + errors == 20_000)
        #expect(values > 100 && errors > 1000, "\(values) values, \(errors) errors")
    }
}

private extension PythonValue {
    var containsSession: Bool { self["_auth_user_id"] != nil }
}

/// A value of the shapes a Django app keeps.
struct Profile: Codable, Equatable {
    var name: String
    var age: Int
    var score: Double
    var admin: Bool
    var tags: Set<String>
    var visits: [Date]
    var balance: Decimal
    var id: UUID
    var avatar: Data
    var nickname: String?
    var limits: [String: Int]
    var byNumber: [Int: String]
}

@Suite struct PythonValueCodingTests {
    let profile = Profile(
        name: "Zoë", age: 41, score: 9.5, admin: false, tags: ["a", "b"],
        visits: [Date(timeIntervalSince1970: 1_765_000_000.123456), Date(timeIntervalSince1970: -86_400.5)],
        balance: Decimal(string: "12.34")!, id: UUID(uuidString: "12345678-90AB-CDEF-1234-567890ABCDEF")!,
        avatar: Data([0, 1, 255]), nickname: nil, limits: ["daily": 5], byNumber: [1: "one"])

    @Test func aStructIsADictOfItsFieldsAndReadsBack() throws {
        let python = try PythonValueEncoder.encode(profile)
        #expect(python["name"] == .string("Zoë"))
        #expect(python["age"] == .int(41))
        #expect(python["admin"] == .bool(false))
        #expect(python["balance"] == .decimal("12.34"))
        #expect(python["id"] == .uuid(profile.id))
        #expect(python["avatar"] == .bytes([0, 1, 255]))
        #expect(python["nickname"] == nil, "an absent optional is left out, as Codable does")
        #expect(python["byNumber"] == .dict([PythonDictItem(.int(1), .string("one"))]))
        guard case .set(let tags) = python["tags"] else { Issue.record("tags: \(String(describing: python["tags"]))"); return }
        #expect(Set(tags) == [.string("a"), .string("b")])
        guard case .list(let visits) = python["visits"], case .datetime(let first) = visits[0] else { Issue.record("visits"); return }
        #expect(first == PythonDateTime(year: 2025, month: 12, day: 6, hour: 5, minute: 46, second: 40, microsecond: 123456, utcOffsetSeconds: 0))
        let back = try PythonValueDecoder.decode(Profile.self, from: try PickleReader.read(try PickleWriter.write(python)))
        #expect(back.name == profile.name && back.tags == profile.tags && back.balance == profile.balance && back.id == profile.id)
        #expect(back.avatar == profile.avatar && back.limits == profile.limits && back.byNumber == profile.byNumber && back.nickname == nil)
        for (a, b) in zip(back.visits, profile.visits) { #expect(abs(a.timeIntervalSince(b)) < 0.000_002) }
    }

    @Test func aSubclassKeepsItsSuperclassUnderSuper() throws {
        let python = try PythonValueEncoder.encode(Derived(b: 2))
        #expect(python == ["b": 2, "super": ["a": 1]])
        #expect(try PythonValueDecoder.decode(Derived.self, from: python).b == 2)
    }

    /// Python's `{1, 2} == {2, 1}` and `{"a": 1, "b": 2} == {"b": 2, "a": 1}`; lists and tuples keep
    /// their order; equal values hash alike, so a Swift `Set` of them holds one.
    @Test func setsAndDictsAreEqualInAnyOrderAsInPython() throws {
        let set12: PythonValue = .set([.int(1), .string("two")])
        let set21: PythonValue = .set([.string("two"), .int(1)])
        #expect(set12 == set21)
        #expect(Set([set12, set21]).count == 1)
        #expect(set12 != .set([.int(1), .string("three")]))
        #expect(set12 != .set([.int(1)]))
        #expect(set12 != .list([.int(1), .string("two")]), "a set is not a list")
        let dictAB: PythonValue = .dict([PythonDictItem("a", 1), PythonDictItem("b", .set([1, 2]))])
        let dictBA: PythonValue = .dict([PythonDictItem("b", .set([2, 1])), PythonDictItem("a", 1)])
        #expect(dictAB == dictBA)
        #expect(Set([dictAB, dictBA]).count == 1)
        #expect(dictAB != .dict([PythonDictItem("a", 1), PythonDictItem("b", 2)]))
        #expect(dictAB != .dict([PythonDictItem("a", 1)]))
        // A key written twice: the last item counts, as when Python builds the dict.
        let overwritten: PythonValue = .dict([PythonDictItem("a", 0), PythonDictItem("b", .set([1, 2])), PythonDictItem("a", 1)])
        #expect(overwritten == dictAB)
        #expect(Set([overwritten, dictAB]).count == 1)
        #expect(PythonValue.list([1, 2]) != .list([2, 1]), "lists keep their order")
        #expect(PythonValue.tuple([1, 2]) != .tuple([2, 1]), "tuples too")
        // A set CPython pickled reads equal to the same members in another order.
        let fromPython = try #require(pickleCorpus.first { if case .set(let m) = $0.2, m.count > 1 { true } else { false } })
        guard case .set(let members) = fromPython.2 else { return }
        #expect(try PickleReader.read(bytes(hex: fromPython.1)) == .set(members.reversed()))
    }

    @Test func aDateBeyondPythonsYearsIsATypedErrorNotATrap() {
        for date in [Date(timeIntervalSince1970: 1e20), Date(timeIntervalSince1970: -1e20), Date(timeIntervalSince1970: 300_000_000_000)] {
            #expect(throws: CacheError.self) { try DjangoValueCoding.encode(date, flags: false, key: "k") }
            #expect(throws: CacheError.self) { try DjangoValueCoding.encode(date, flags: false, json: true, key: "k") }
        }
        #expect(throws: Never.self) { try DjangoValueCoding.encode(Date(timeIntervalSince1970: 253_402_300_799), flags: false, key: "k") }
    }

    @Test func aMismatchNamesWhatWasExpectedAndWhere() throws {
        let value = PythonValue.dict([PythonDictItem(.string("name"), .int(3))])
        do {
            _ = try PythonValueDecoder.decode(Profile.self, from: value)
            Issue.record("decoded")
        } catch DecodingError.typeMismatch(_, let context) {
            #expect(context.debugDescription.contains("expected str at name"), "\(context.debugDescription)")
        }
        #expect(throws: DecodingError.self) { try PythonValueDecoder.decode(UInt8.self, from: .int(300)) }
    }

    @Test func onMemcachedACompressorWritesPymemcachesCompressedFlag() throws {
        let flag = DjangoValueCoding.Flag.self
        let long = String(repeating: "lorem ipsum ", count: 40)
        let stored = try DjangoValueCoding.encode(long, flags: true, compressor: .zlib, key: "k")
        #expect(stored.kind.rawValue == flag.text | flag.compressed, "text, compressed")
        #expect(try ValueCompressor.zlib.decompress(stored.bytes) == Array(long.utf8), "zlib.compress of the text")
        #expect(try DjangoValueCoding.decode(String.self, from: stored, flags: true, compressor: .zlib, key: "k") == long)
        // No compressor named: pymemcache's default, zlib.
        #expect(try DjangoValueCoding.decode(String.self, from: stored, flags: true, key: "k") == long)
        // Bytes that compress to more stay as they are, without the flag (as CompressedSerde does).
        var generator = SystemRandomNumberGenerator()
        let noise = (0..<64).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let kept = try DjangoValueCoding.encode(noise, flags: true, compressor: .zlib, key: "k")
        #expect(kept.bytes == noise && kept.kind.rawValue == flag.bytes)
        // Short values and integers are never compressed.
        #expect(try DjangoValueCoding.encode("short", flags: true, compressor: .zlib, key: "k").kind.rawValue == flag.text)
        #expect(try DjangoValueCoding.encode(123_456_789, flags: true, compressor: .zlib, key: "k").kind.rawValue == flag.integer)
        // A value without the flag is read as it is, even when the cache names a compressor.
        let plain = StoredValue(bytes: Array("x".utf8), kind: ValueKind(rawValue: flag.text))
        #expect(try DjangoValueCoding.decode(String.self, from: plain, flags: true, compressor: .zlib, key: "k") == "x")
        // The flag on bytes that do not decompress is a typed error.
        let garbage = StoredValue(bytes: [1, 2, 3], kind: ValueKind(rawValue: flag.text | flag.compressed))
        #expect(throws: CacheError.self) { try DjangoValueCoding.decode(String.self, from: garbage, flags: true, compressor: .zlib, key: "k") }
    }

    @Test func theDjangoFormatStoresIntegersAsTextAndEverythingElseAsPickles() throws {
        let int = try DjangoValueCoding.encode(42, flags: false, key: "k")
        #expect(int.bytes == Array("42".utf8))
        #expect(try DjangoValueCoding.encode("abc", flags: false, key: "k").bytes == bytes(hex: "80059507000000000000008c03616263942e"))
        #expect(try DjangoValueCoding.encode(true, flags: false, key: "k").bytes == bytes(hex: "8005882e"))
        // With item flags (memcached), as pymemcache's pickle_serde: text and bytes as they are.
        let text = try DjangoValueCoding.encode("abc", flags: true, key: "k")
        #expect(text.bytes == Array("abc".utf8) && text.kind.rawValue == DjangoValueCoding.Flag.text)
        #expect(try DjangoValueCoding.encode(7, flags: true, key: "k").kind.rawValue == DjangoValueCoding.Flag.integer)
        #expect(try DjangoValueCoding.encode([1, 2], flags: true, key: "k").kind.rawValue == DjangoValueCoding.Flag.pickle)
        // Reading tries an integer first, as Django does.
        #expect(try DjangoValueCoding.decode(Int.self, from: StoredValue(bytes: Array(" -1_000 ".utf8), kind: .untagged), flags: false, key: "k") == -1000)
        #expect(throws: CacheError.self) {
            try DjangoValueCoding.decode(Int.self, from: StoredValue(bytes: Array("99999999999999999999".utf8), kind: .untagged), flags: false, key: "k")
        }
        let none = StoredValue(bytes: bytes(hex: "80054e2e"), kind: .untagged)
        #expect(try DjangoValueCoding.decode(String.self, from: none, flags: false, key: "k") == nil)
        #expect(try DjangoValueCoding.decode(String?.self, from: none, flags: false, key: "k") == .some(nil))
    }

    @Test func aPickleThatNamesCodeIsATypedCacheError() {
        let evil = StoredValue(bytes: Array("cos\nsystem\n(S'true'\ntR.".utf8), kind: .untagged)
        #expect {
            try DjangoValueCoding.decode(String.self, from: evil, flags: false, key: ":1:k")
        } throws: { error in
            guard let e = error as? CacheError, e.code == .decodingFailed, let key = e.key, let reason = e.reason else { return false }
            return key == ":1:k" && reason.contains("os.system")
        }
    }
}

/// A class whose superclass is encoded with `superEncoder()` (its own keys have no "super" case).
class Base: Codable {
    var a = 1
    init() {}
}

final class Derived: Base {
    var b: Int
    private enum Keys: String, CodingKey { case b }
    init(b: Int) {
        self.b = b
        super.init()
    }
    required init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        b = try c.decode(Int.self, forKey: .b)
        try super.init(from: c.superDecoder())
    }
    override func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(b, forKey: .b)
        try super.encode(to: c.superEncoder())
    }
}
