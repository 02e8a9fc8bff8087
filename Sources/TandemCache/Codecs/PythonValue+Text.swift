import Foundation

extension PythonValue: CustomStringConvertible {
    /// The value as JSON text (Python's `json.dumps` spelling), when it has a JSON form: `None`, `bool`,
    /// `int`, finite `float`, `str`, `list`, `tuple` and `dict` with `str` keys, all the way down. Nil
    /// for anything else (bytes, sets, datetimes, decimals, UUIDs, non-`str` keys, NaN).
    public var jsonText: String? {
        guard hasJSONForm(depth: 0), let bytes = try? PythonJSON.write(self) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    private func hasJSONForm(depth: Int) -> Bool {
        guard depth < PythonJSON.maxDepth else { return false }
        switch self {
        case .none, .bool, .int, .string: return true
        case .float(let d): return d.isFinite
        case .list(let items), .tuple(let items): return items.allSatisfy { $0.hasJSONForm(depth: depth + 1) }
        case .dict(let items):
            return items.allSatisfy { item in
                if case .string = item.key { item.value.hasJSONForm(depth: depth + 1) } else { false }
            }
        case .bytes, .set, .datetime, .decimal, .uuid: return false
        }
    }

    /// The value as Python's `repr` writes it (`{'a': b'\x00', 'when': datetime.datetime(...)}`).
    public var description: String {
        switch self {
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .float(let d): return d.isNaN ? "nan" : d.isInfinite ? (d < 0 ? "-inf" : "inf") : Self.pythonFloat(d)
        case .string(let s):
            var out = "'"
            for scalar in s.unicodeScalars {
                switch scalar {
                case "'": out += "\\'"
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                default: out += scalar.value < 0x20 || scalar.value == 0x7F ? String(format: "\\x%02x", scalar.value) : String(scalar)
                }
            }
            return out + "'"
        case .bytes(let b):
            return "b'" + b.map { c -> String in
                switch c {
                case 0x27: "\\'"
                case 0x5C: "\\\\"
                case 0x0A: "\\n"
                case 0x0D: "\\r"
                case 0x09: "\\t"
                case 0x20..<0x7F: String(UnicodeScalar(c))
                default: String(format: "\\x%02x", c)
                }
            }.joined() + "'"
        case .list(let items): return "[" + items.map(\.description).joined(separator: ", ") + "]"
        case .tuple(let items): return "(" + items.map(\.description).joined(separator: ", ") + (items.count == 1 ? ",)" : ")")
        case .set(let items): return items.isEmpty ? "set()" : "{" + items.map(\.description).joined(separator: ", ") + "}"
        case .dict(let items): return "{" + items.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "}"
        case .datetime(let dt):
            var fields = [dt.year, dt.month, dt.day, dt.hour, dt.minute].map(String.init)
            if dt.second != 0 || dt.microsecond != 0 { fields.append(String(dt.second)) }
            if dt.microsecond != 0 { fields.append(String(dt.microsecond)) }
            if let offset = dt.utcOffsetSeconds {
                fields.append(offset == 0 ? "tzinfo=datetime.timezone.utc" : "tzinfo=datetime.timezone(datetime.timedelta(seconds=\(offset)))")
            }
            return "datetime.datetime(" + fields.joined(separator: ", ") + ")"
        case .decimal(let s): return "Decimal('\(s)')"
        case .uuid(let u): return "UUID('\(u.uuidString.lowercased())')"
        }
    }

    /// Python's spelling of a finite float: Swift's shortest round-trip digits are the same
    /// (`2.5`, `1e+300`, `1.0`, `1e-05`, `1.2345678901234568e+17`).
    private static func pythonFloat(_ d: Double) -> String { "\(d)" }
}
