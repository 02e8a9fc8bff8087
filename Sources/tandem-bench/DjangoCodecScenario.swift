import Foundation
import Tandem

/// `django-codec`: encoding and decoding what a Django app keeps in its cache, in Tandem's pickle
/// codec against CPython's C pickle (Integration/bench/pickle_reference.py) in the same run: a
/// typical session dict (as `PythonValue`, the shape `DjangoSessionStore` reads) and a 10 KB HTML
/// fragment (a `String`). Each side encodes the same value and decodes the same bytes (Python's
/// pickle); seconds per operation, best of the rounds.
struct DjangoCodecScenario {
    let python: String
    let script: String
    let seconds: Double
    let rounds: Int

    static let session: PythonValue = [
        "_auth_user_id": "42",
        "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
        "_auth_user_hash": "6f1ed002ab5595859014ebf0951522d96f1ed002ab5595859014ebf0951522d9",
        "_session_expiry": 1_209_600,
        "cart": [["sku": "A-1", "qty": 2], ["sku": "B-7", "qty": 1]],
        "theme": "dark",
    ]
    static let fragment = String((0..<400).map { "<li class=\"item\">Product \($0)</li>\n" }.joined().prefix(10240))

    private struct Reference: Decodable {
        struct Side: Decodable {
            let pickle: String
            let dumps_ns: Double
            let loads_ns: Double
        }
        let session: Side
        let fragment: Side
    }

    /// Best seconds per call of `body` over the rounds (each round about `seconds` long).
    private func best(_ body: () throws -> Void) rethrows -> Double {
        var n = 1
        let clock = ContinuousClock()
        while true {
            let start = clock.now
            for _ in 0..<n { try body() }
            if (clock.now - start) > .seconds(seconds / 10) { break }
            n *= 2
        }
        var best = Double.infinity
        for _ in 0..<rounds {
            var ops = 0
            let start = clock.now
            var elapsed = 0.0
            while elapsed < seconds {
                for _ in 0..<n { try body() }
                ops += n
                let d = clock.now - start
                elapsed = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
            }
            best = min(best, elapsed / Double(ops))
        }
        return best
    }

    private static func bytes(hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var it = hex.utf8.makeIterator()
        while let a = it.next(), let b = it.next() { out.append(UInt8(String(decoding: [a, b], as: UTF8.self), radix: 16) ?? 0) }
        return out
    }

    func run() throws -> [BenchResult] {
        let json = try runTool(python, [script, String(seconds), String(rounds)])
        let reference = try JSONDecoder().decode(Reference.self, from: Data(json.utf8))
        let sessionBytes = Self.bytes(hex: reference.session.pickle)
        let fragmentBytes = Self.bytes(hex: reference.fragment.pickle)
        // The same values on both sides, or the comparison is void.
        guard try Pickle.loads(sessionBytes, as: PythonValue.self) == Self.session,
              try Pickle.loads(fragmentBytes, as: String.self) == Self.fragment else {
            throw BenchError("django-codec: Python's values are not Tandem's")
        }
        var sink = 0
        let cases: [(String, Double, () throws -> Void)] = [
            ("django-codec-session-encode", reference.session.dumps_ns, { sink &+= try Pickle.dumps(Self.session).count }),
            ("django-codec-session-decode", reference.session.loads_ns, {
                if case .dict(let d) = try Pickle.loads(sessionBytes, as: PythonValue.self) { sink &+= d.count }
            }),
            ("django-codec-fragment-encode", reference.fragment.dumps_ns, { sink &+= try Pickle.dumps(Self.fragment).count }),
            ("django-codec-fragment-decode", reference.fragment.loads_ns, { sink &+= try Pickle.loads(fragmentBytes, as: String.self).utf8.count }),
        ]
        var results: [BenchResult] = []
        for (name, pythonNanos, body) in cases {
            let t = try best(body)
            let r = pythonNanos / 1e9
            var result = BenchResult(scenario: name, reference: r, tandem: t, unit: "s", ratio: t / r, better: "lower")
            result.referenceName = "CPython \(pythonVersion) C pickle (protocol 5)"
            results.append(result)
        }
        if sink == 42 { print("") }  // keeps the work observable
        return results
    }

    private var pythonVersion: String {
        (try? runTool(python, ["-c", "import platform; print(platform.python_version())"]).trimmingCharacters(in: .whitespacesAndNewlines)) ?? "?"
    }
}
