import Foundation

/// JSON as django-redis's `JSONSerializer` writes and reads it: Python's `json.dumps` with Django's
/// `DjangoJSONEncoder` (a datetime as ISO 8601 text to the millisecond, `Z` for UTC; a decimal and a
/// UUID as their text) and `json.loads`, to and from ``PythonValue``.
enum PythonJSON {
    /// The deepest nesting read or written.
    static let maxDepth = 200

    /// `value` as JSON text; bytes and sets have no JSON form (Python raises `TypeError`) and are an
    /// error, as is a float that is not finite.
    static func write(_ value: PythonValue) throws -> [UInt8] {
        var out: [UInt8] = []
        try write(value, into: &out, depth: 0)
        return out
    }

    private static func write(_ value: PythonValue, into out: inout [UInt8], depth: Int) throws {
        guard depth < maxDepth else { throw PickleError("the value is nested deeper than \(maxDepth) levels") }
        switch value {
        case .none: out += Array("null".utf8)
        case .bool(let b): out += Array((b ? "true" : "false").utf8)
        case .int(let i): out += Array(String(i).utf8)
        case .float(let d):
            guard d.isFinite else { throw PickleError("JSON cannot hold the float \(d)") }
            out += Array("\(d)".utf8)
        case .string(let s): quote(s, into: &out)
        case .list(let items), .tuple(let items):
            out.append(0x5B)
            for (i, item) in items.enumerated() {
                if i > 0 { out += [0x2C, 0x20] }
                try write(item, into: &out, depth: depth + 1)
            }
            out.append(0x5D)
        case .dict(let items):
            out.append(0x7B)
            for (i, item) in items.enumerated() {
                if i > 0 { out += [0x2C, 0x20] }
                switch item.key {
                case .string(let k): quote(k, into: &out)
                // json.dumps turns int, float, bool and None keys into text.
                case .int(let k): quote(String(k), into: &out)
                case .bool(let b): quote(b ? "true" : "false", into: &out)
                case .none: quote("null", into: &out)
                case .float(let d) where d.isFinite: quote("\(d)", into: &out)
                default: throw PickleError("JSON cannot hold a dict key that is a \(item.key.typeName)")
                }
                out += [0x3A, 0x20]
                try write(item.value, into: &out, depth: depth + 1)
            }
            out.append(0x7D)
        case .datetime(let dt):
            guard dt.date != nil else { throw PickleError("a datetime with a field out of range: \(dt)") }
            quote(isoText(dt), into: &out)
        case .decimal(let s): quote(s, into: &out)
        case .uuid(let u): quote(u.uuidString.lowercased(), into: &out)
        case .bytes, .set: throw PickleError("JSON cannot hold a \(value.typeName) (Django's JSON encoder refuses it too)")
        }
    }

    /// DjangoJSONEncoder's datetime: `isoformat()` cut to milliseconds, `+00:00` written `Z`.
    static func isoText(_ dt: PythonDateTime) -> String {
        var s = String(format: "%04d-%02d-%02dT%02d:%02d:%02d", dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
        if dt.microsecond != 0 { s += String(format: ".%03d", dt.microsecond / 1000) }
        if let offset = dt.utcOffsetSeconds {
            if offset == 0 { return s + "Z" }
            let sign = offset < 0 ? "-" : "+"
            let m = abs(offset) / 60
            s += String(format: "%@%02d:%02d", sign, m / 60, m % 60)
        }
        return s
    }

    private static func quote(_ s: String, into out: inout [UInt8]) {
        out.append(0x22)
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += [0x5C, 0x22]
            case "\\": out += [0x5C, 0x5C]
            case "\n": out += [0x5C, 0x6E]
            case "\r": out += [0x5C, 0x72]
            case "\t": out += [0x5C, 0x74]
            default:
                if scalar.value < 0x20 || scalar.value >= 0x7F {
                    // Python's ensure_ascii: \uXXXX, a surrogate pair beyond the BMP.
                    if scalar.value > 0xFFFF {
                        let v = scalar.value - 0x10000
                        out += Array(String(format: "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF)).utf8)
                    } else {
                        out += Array(String(format: "\\u%04x", scalar.value).utf8)
                    }
                } else {
                    out.append(UInt8(scalar.value))
                }
            }
        }
        out.append(0x22)
    }

    // MARK: reading

    /// The JSON text in `bytes` as Python's `json.loads` reads it (objects keep their order; a number
    /// with a fraction or exponent is a float; `NaN` and `Infinity` as Python writes them).
    static func read(_ bytes: [UInt8]) throws -> PythonValue {
        var r = Reader(bytes: bytes)
        r.space()
        let v = try r.value(depth: 0)
        r.space()
        guard r.pos == bytes.count else { throw PickleError("JSON text has more after its value (offset \(r.pos))") }
        return v
    }

    private struct Reader {
        let bytes: [UInt8]
        var pos = 0

        mutating func space() {
            while pos < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[pos]) { pos += 1 }
        }

        func fail(_ what: String) -> PickleError { PickleError("JSON: \(what) at offset \(pos)") }

        mutating func literal(_ word: String, _ v: PythonValue) throws -> PythonValue {
            let w = Array(word.utf8)
            guard bytes.count - pos >= w.count, Array(bytes[pos..<(pos + w.count)]) == w else { throw fail("an unknown word") }
            pos += w.count
            return v
        }

        mutating func value(depth: Int) throws -> PythonValue {
            guard depth < PythonJSON.maxDepth else { throw fail("nesting deeper than \(PythonJSON.maxDepth) levels") }
            guard pos < bytes.count else { throw fail("the text ends where a value should be") }
            switch bytes[pos] {
            case 0x7B:  // {
                pos += 1
                var items: [PythonDictItem] = []
                space()
                if pos < bytes.count, bytes[pos] == 0x7D { pos += 1; return .dict([]) }
                while true {
                    space()
                    guard pos < bytes.count, bytes[pos] == 0x22 else { throw fail("an object key that is not a string") }
                    let key = PythonValue.string(try string())
                    space()
                    guard pos < bytes.count, bytes[pos] == 0x3A else { throw fail("a missing ':'") }
                    pos += 1
                    space()
                    let v = try value(depth: depth + 1)
                    // json.loads keeps the last of repeated keys, in the first one's place.
                    if let at = items.firstIndex(where: { $0.key == key }) { items[at].value = v } else { items.append(PythonDictItem(key, v)) }
                    space()
                    guard pos < bytes.count else { throw fail("an object that does not end") }
                    if bytes[pos] == 0x2C { pos += 1; continue }
                    guard bytes[pos] == 0x7D else { throw fail("a missing ',' or '}'") }
                    pos += 1
                    return .dict(items)
                }
            case 0x5B:  // [
                pos += 1
                var items: [PythonValue] = []
                space()
                if pos < bytes.count, bytes[pos] == 0x5D { pos += 1; return .list([]) }
                while true {
                    space()
                    items.append(try value(depth: depth + 1))
                    space()
                    guard pos < bytes.count else { throw fail("an array that does not end") }
                    if bytes[pos] == 0x2C { pos += 1; continue }
                    guard bytes[pos] == 0x5D else { throw fail("a missing ',' or ']'") }
                    pos += 1
                    return .list(items)
                }
            case 0x22: return .string(try string())
            case 0x74: return try literal("true", .bool(true))
            case 0x66: return try literal("false", .bool(false))
            case 0x6E: return try literal("null", .none)
            case 0x4E: return try literal("NaN", .float(.nan))
            case 0x49: return try literal("Infinity", .float(.infinity))
            default: return try number()
            }
        }

        mutating func number() throws -> PythonValue {
            let start = pos
            if pos < bytes.count, bytes[pos] == 0x2D {
                pos += 1
                if pos < bytes.count, bytes[pos] == 0x49 { return try literal("Infinity", .float(-.infinity)) }
            }
            var isFloat = false
            while pos < bytes.count {
                let c = bytes[pos]
                if (0x30...0x39).contains(c) { pos += 1; continue }
                if c == 0x2E || c == 0x65 || c == 0x45 || ((c == 0x2B || c == 0x2D) && isFloat) { isFloat = true; pos += 1; continue }
                break
            }
            let text = String(decoding: bytes[start..<pos], as: UTF8.self)
            guard !text.isEmpty, text != "-" else { throw fail("an unexpected character") }
            if isFloat {
                guard let d = Double(text) else { throw fail("a malformed number") }
                return .float(d)
            }
            if let i = Int(text) { return .int(i) }
            throw fail("an int beyond 64 bits")
        }

        mutating func string() throws -> String {
            pos += 1  // the opening quote
            var out: [UInt8] = []
            while true {
                guard pos < bytes.count else { throw fail("a string that does not end") }
                let c = bytes[pos]
                pos += 1
                if c == 0x22 { break }
                guard c == 0x5C else {
                    guard c >= 0x20 else { throw fail("a control character in a string") }
                    out.append(c)
                    continue
                }
                guard pos < bytes.count else { throw fail("a string that ends in a backslash") }
                let e = bytes[pos]
                pos += 1
                switch e {
                case 0x22, 0x5C, 0x2F: out.append(e)
                case 0x62: out.append(0x08)
                case 0x66: out.append(0x0C)
                case 0x6E: out.append(0x0A)
                case 0x72: out.append(0x0D)
                case 0x74: out.append(0x09)
                case 0x75:
                    var scalar = try hex4()
                    if (0xD800..<0xDC00).contains(scalar), bytes.count - pos >= 6, bytes[pos] == 0x5C, bytes[pos + 1] == 0x75 {
                        pos += 2
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw fail("a lone surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let u = Unicode.Scalar(scalar) else { throw fail("a lone surrogate") }
                    out += Array(String(u).utf8)
                default: throw fail("an unknown escape")
                }
            }
            guard let s = String(validating: out, as: UTF8.self) else { throw fail("a string that is not UTF-8") }
            return s
        }

        mutating func hex4() throws -> UInt32 {
            guard bytes.count - pos >= 4, let v = UInt32(String(decoding: bytes[pos..<(pos + 4)], as: UTF8.self), radix: 16) else {
                throw fail("a bad \\u escape")
            }
            pos += 4
            return v
        }
    }
}
