import Foundation

extension PythonValue: CustomStringConvertible {
    /// The value as JSON text (Python's `json.dumps` spelling), when it has a JSON form: `None`, `bool`,
    /// `int`, finite `float`, `str`, `list`, `tuple` and `dict` with `str` keys, all the way down. Nil
    /// for anything else (bytes, sets, datetimes, decimals, UUIDs, non-`str` keys, NaN).
    public var jsonText: String? {
        var out = ""
        return writeJSON(into: &out) ? out : nil
    }

    private func writeJSON(into out: inout String) -> Bool {
        switch self {
        case .none: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .float(let d):
            guard d.isFinite else { return false }
            out += Self.pythonFloat(d)
        case .string(let s): Self.quoteJSON(s, into: &out)
        case .list(let items), .tuple(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += ", " }
                guard item.writeJSON(into: &out) else { return false }
            }
            out += "]"
        case .dict(let items):
            out += "{"
            for (i, item) in items.enumerated() {
                guard case .string(let k) = item.key else { return false }
                if i > 0 { out += ", " }
                Self.quoteJSON(k, into: &out)
                out += ": "
                guard item.value.writeJSON(into: &out) else { return false }
            }
            out += "}"
        case .bytes, .set, .datetime, .decimal, .uuid: return false
        }
        return true
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

    private static func quoteJSON(_ s: String, into out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                // Python's json.dumps escapes everything outside ASCII (ensure_ascii).
                if scalar.value < 0x20 || scalar.value >= 0x7F {
                    if scalar.value > 0xFFFF {
                        let v = scalar.value - 0x10000
                        out += String(format: "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF))
                    } else {
                        out += String(format: "\\u%04x", scalar.value)
                    }
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}
