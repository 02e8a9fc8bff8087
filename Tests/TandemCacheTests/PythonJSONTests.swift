import Foundation
@_spi(Backend) @testable import TandemCache
import Testing

@Suite struct PythonJSONTests {
    @Test func writesWhatDjangosJSONEncoderWrites() throws {
        let value: PythonValue = [
            "name": "Zoë ☃ 😀", "n": [1, 2.5, nil, true],
            "when": .datetime(PythonDateTime(year: 2025, month: 12, day: 6, hour: 5, minute: 46, second: 40, microsecond: 500_123, utcOffsetSeconds: 0)),
            "naive": .datetime(PythonDateTime(year: 2025, month: 1, day: 2, hour: 3, minute: 4, second: 5)),
            "price": .decimal("19.90"), "id": .uuid(UUID(uuidString: "12345678-90ab-cdef-1234-567890abcdef")!), "tab": "a\tb\"c\\",
        ]
        // Python 3.11: json.dumps(value, cls=DjangoJSONEncoder) of the same dict.
        let python = #"{"name": "Zo\u00eb \u2603 \ud83d\ude00", "n": [1, 2.5, null, true], "when": "2025-12-06T05:46:40.500Z", "naive": "2025-01-02T03:04:05", "price": "19.90", "id": "12345678-90ab-cdef-1234-567890abcdef", "tab": "a\tb\"c\\"}"#
        #expect(String(decoding: try PythonJSON.write(value), as: UTF8.self) == python)
        #expect(PythonJSON.isoText(PythonDateTime(year: 2025, month: 1, day: 2, hour: 3, minute: 4, second: 5, utcOffsetSeconds: -19_800))
            == "2025-01-02T03:04:05-05:30")
    }

    @Test func readsWhatJSONLoadsReads() throws {
        let text = #" {"a": [1, -2, 2.5, 1e3, -0.0, null, true, false, "\u00e9\ud83d\ude00\n"], "a2": {}, "e": [], "a": 7} "#
        let v = try PythonJSON.read(Array(text.utf8))
        // A repeated key keeps the last value in the first one's place, as a Python dict does.
        #expect(v == ["a": 7, "a2": [:], "e": []])
        let list = try PythonJSON.read(Array(#"[1, -2, 2.5, 1e3, -0.0, null, true, false, "\u00e9\ud83d\ude00\n", NaN]"#.utf8))
        guard case .list(let items) = list else { Issue.record("\(list)"); return }
        #expect(Array(items.prefix(9)) == [1, -2, 2.5, 1000.0, -0.0, nil, true, false, "é😀\n"])
        if case .float(let d) = items[9] { #expect(d.isNaN) } else { Issue.record("NaN read as \(items[9])") }
    }

    @Test func badJSONIsATypedErrorNamingWhere() {
        for bad in ["", "{", "[1,", "{\"a\" 1}", "tru", "\"\\x\"", "1 2", "99999999999999999999", "\"\u{01}\"", "[\"\\ud800\"]",
                    String(repeating: "[", count: 300) + String(repeating: "]", count: 300)] {
            #expect(throws: PickleError.self, "\(bad.prefix(20))") { try PythonJSON.read(Array(bad.utf8)) }
        }
        #expect(throws: PickleError.self) { try PythonJSON.write(.bytes([1])) }
        #expect(throws: PickleError.self) { try PythonJSON.write(.set([1])) }
        #expect(throws: PickleError.self) { try PythonJSON.write(.float(.infinity)) }
    }

    @Test func theJSONFormatReadsDatesDecimalsAndUUIDsFromTheirText() throws {
        let stored = try DjangoValueCoding.encode(Date(timeIntervalSince1970: 1_765_000_000.5), flags: false, json: true, key: "k")
        #expect(String(decoding: stored.bytes, as: UTF8.self) == "\"2025-12-06T05:46:40.500Z\"")
        #expect(try DjangoValueCoding.decode(Date.self, from: stored, flags: false, json: true, key: "k") == Date(timeIntervalSince1970: 1_765_000_000.5))
        let price = try DjangoValueCoding.encode(Decimal(string: "19.9")!, flags: false, json: true, key: "k")
        #expect(try DjangoValueCoding.decode(Decimal.self, from: price, flags: false, json: true, key: "k") == Decimal(string: "19.9"))
        #expect(try DjangoValueCoding.encode(42, flags: false, json: true, key: "k").bytes == Array("42".utf8))
        #expect { try DjangoValueCoding.encode(Set([1]), flags: false, json: true, key: ":1:k") } throws: { error in
            guard let e = error as? CacheError, e.code == .encodingFailed, let key = e.key, let reason = e.reason else { return false }
            return key == ":1:k" && reason.contains("set")
        }
        #expect(PythonDateTime(isoText: "2025-12-06 05:46:40.5+01:00") == PythonDateTime(
            year: 2025, month: 12, day: 6, hour: 5, minute: 46, second: 40, microsecond: 500_000, utcOffsetSeconds: 3600))
        for bad in ["2025-12-06", "2025-13-06T00:00:00", "2025-12-06T00:00:00.", "2025-12-06T00:00:00+1:00", "2025-12-06T00:00:00.1234567891Zx"] {
            #expect(PythonDateTime(isoText: bad) == nil, "\(bad)")
        }
    }
}
