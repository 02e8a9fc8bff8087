import Foundation

/// A value as Python sees it: what Tandem reads from and writes to a cache shared with a Django app
/// (`SERIALIZER` `"django"` or `"json"`).
///
/// Read one when the shape of a stored value is not known in advance:
///
/// ```swift
/// let session = try await cache.async.get(key, as: PythonValue.self)
/// let userID = session?["_auth_user_id"]?.string
/// ```
///
/// Any `Codable` type maps to and from these values: a struct is a `dict` of its fields, an array a
/// `list`, `Set` a `set`, `Date` a `datetime.datetime` (written in UTC, with its time zone), `Decimal` a
/// `decimal.Decimal`, `UUID` a `uuid.UUID`, `Data` and `[UInt8]` `bytes`.
public enum PythonValue: Sendable, Hashable {
    /// `None`.
    case none
    /// `True` or `False`.
    case bool(Bool)
    /// An `int` that fits in 64 bits (a larger one is a decoding error, never a wrap).
    case int(Int)
    /// A `float`.
    case float(Double)
    /// A `str`.
    case string(String)
    /// `bytes` (and `bytearray`, when read).
    case bytes([UInt8])
    /// A `list`.
    case list([PythonValue])
    /// A `tuple`.
    case tuple([PythonValue])
    /// A `dict`, its items in insertion order. Two dicts are equal when they have the same items in
    /// any order, as in Python.
    case dict([PythonDictItem])
    /// A `set` (and `frozenset`, when read), in the order it was stored. Two sets are equal when they
    /// have the same members in any order, as in Python.
    case set([PythonValue])
    /// A `datetime.datetime` (boxed: it is the largest payload, and every value is as large as that).
    indirect case datetime(PythonDateTime)
    /// A `decimal.Decimal`, as its exact text (`"1.10"`).
    case decimal(String)
    /// A `uuid.UUID`.
    case uuid(UUID)

    /// The value of `key` in a `dict` with `str` keys; nil when this is not a dict or has no such key.
    public subscript(key: String) -> PythonValue? {
        guard case .dict(let items) = self else { return nil }
        return items.first { $0.key == .string(key) }?.value
    }

    /// The text of a `str`; nil for any other value.
    public var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// The number of an `int`; nil for any other value.
    public var int: Int? {
        if case .int(let i) = self { return i }
        return nil
    }
}

extension PythonValue {
    /// Python's equality for these values, but for numbers of different types (`1 == 1.0 == True` in
    /// Python, not here): lists and tuples compare in order, dicts and sets in any order.
    public static func == (lhs: PythonValue, rhs: PythonValue) -> Bool {
        switch (lhs, rhs) {
        case (.none, .none): true
        case (.bool(let a), .bool(let b)): a == b
        case (.int(let a), .int(let b)): a == b
        case (.float(let a), .float(let b)): a == b
        case (.string(let a), .string(let b)): a == b
        case (.bytes(let a), .bytes(let b)): a == b
        case (.list(let a), .list(let b)): a == b
        case (.tuple(let a), .tuple(let b)): a == b
        case (.dict(let a), .dict(let b)): sameItems(a, b)
        case (.set(let a), .set(let b)): a.count == b.count && memberCounts(a) == memberCounts(b)
        case (.datetime(let a), .datetime(let b)): a == b
        case (.decimal(let a), .decimal(let b)): a == b
        case (.uuid(let a), .uuid(let b)): a == b
        default: false
        }
    }

    /// Hashes consistently with ``==(_:_:)``: a dict's items and a set's members count in any order.
    public func hash(into hasher: inout Hasher) {
        switch self {
        case .none: hasher.combine(0)
        case .bool(let v): hasher.combine(1); hasher.combine(v)
        case .int(let v): hasher.combine(2); hasher.combine(v)
        case .float(let v): hasher.combine(3); hasher.combine(v)
        case .string(let v): hasher.combine(4); hasher.combine(v)
        case .bytes(let v): hasher.combine(5); hasher.combine(v)
        case .list(let v): hasher.combine(6); hasher.combine(v)
        case .tuple(let v): hasher.combine(7); hasher.combine(v)
        case .dict(let items):
            let built = Self.built(items)
            hasher.combine(8)
            hasher.combine(built.count)
            hasher.combine(Self.unordered(built.map { PythonDictItem($0.key, $0.value) }))
        case .set(let members):
            hasher.combine(9)
            hasher.combine(members.count)
            hasher.combine(Self.unordered(members))
        case .datetime(let v): hasher.combine(10); hasher.combine(v)
        case .decimal(let v): hasher.combine(11); hasher.combine(v)
        case .uuid(let v): hasher.combine(12); hasher.combine(v)
        }
    }

    /// Two dicts' items, as Python compares them: the same keys, each with an equal value (where a
    /// key is written twice, the last item counts, as when Python builds the dict).
    private static func sameItems(_ a: [PythonDictItem], _ b: [PythonDictItem]) -> Bool {
        built(a) == built(b)
    }

    /// The dict Python builds from `items`.
    private static func built(_ items: [PythonDictItem]) -> [PythonValue: PythonValue] {
        Dictionary(items.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
    }

    private static func memberCounts(_ members: [PythonValue]) -> [PythonValue: Int] {
        Dictionary(members.map { ($0, 1) }, uniquingKeysWith: +)
    }

    /// A hash of `elements` that does not depend on their order.
    private static func unordered<T: Hashable>(_ elements: [T]) -> Int {
        elements.reduce(0) { $0 &+ $1.hashValue }
    }
}

/// One item of a Python `dict`.
public struct PythonDictItem: Sendable, Hashable {
    /// The item's key.
    public var key: PythonValue
    /// The item's value.
    public var value: PythonValue

    /// An item.
    public init(_ key: PythonValue, _ value: PythonValue) {
        self.key = key
        self.value = value
    }
}

/// A Python `datetime.datetime`: its fields, and its offset from UTC when it is aware.
public struct PythonDateTime: Sendable, Hashable {
    /// 1 to 9999.
    public var year: Int
    /// 1 to 12.
    public var month: Int
    /// 1 to 31.
    public var day: Int
    /// 0 to 23.
    public var hour: Int
    /// 0 to 59.
    public var minute: Int
    /// 0 to 59.
    public var second: Int
    /// 0 to 999999.
    public var microsecond: Int
    /// The offset from UTC in seconds of an aware datetime (`datetime.timezone`); nil for a naive one.
    public var utcOffsetSeconds: Int?

    /// A datetime from its fields.
    public init(year: Int, month: Int, day: Int, hour: Int = 0, minute: Int = 0, second: Int = 0,
                microsecond: Int = 0, utcOffsetSeconds: Int? = nil) {
        (self.year, self.month, self.day, self.hour, self.minute, self.second) = (year, month, day, hour, minute, second)
        self.microsecond = microsecond
        self.utcOffsetSeconds = utcOffsetSeconds
    }

    /// `date` in UTC, aware (as Django stores datetimes with `USE_TZ = True`), to the microsecond.
    /// A date beyond Python's years 1 to 9999 gives year 0, which writing refuses with a typed error.
    public init(_ date: Date) {
        let micros = (date.timeIntervalSince1970 * 1_000_000).rounded()
        // Python's range is about ±2.5e17 microseconds from 1970; beyond ±4e17 (or not finite) the
        // conversion to Int64 could trap.
        guard micros.isFinite, abs(micros) < 4e17 else {
            self.init(year: 0, month: 1, day: 1, utcOffsetSeconds: 0)
            return
        }
        let total = Int64(micros)
        let (secs, us) = total.quotientAndRemainder(dividingBy: 1_000_000)
        let seconds = us < 0 ? secs - 1 : secs
        let micro = us < 0 ? us + 1_000_000 : us
        let (days, rest) = seconds.quotientAndRemainder(dividingBy: 86_400)
        let dayNumber = rest < 0 ? days - 1 : days
        let secondOfDay = rest < 0 ? rest + 86_400 : rest
        let (y, m, d) = PythonDateTime.civil(fromDays: dayNumber)
        self.init(year: Int(y), month: Int(m), day: Int(d), hour: Int(secondOfDay / 3600), minute: Int(secondOfDay % 3600 / 60),
                  second: Int(secondOfDay % 60), microsecond: Int(micro), utcOffsetSeconds: 0)
    }

    /// A datetime from ISO 8601 text as Python's `isoformat()` and Django's JSON encoder write it:
    /// `YYYY-MM-DDTHH:MM:SS`, optional fractional seconds (up to six digits), optional `Z` or `±HH:MM`
    /// (a space may stand for the `T`). Nil for anything else.
    public init?(isoText: String) {
        let b = Array(isoText.utf8)
        func number(_ at: Int, _ n: Int) -> Int? {
            guard at + n <= b.count else { return nil }
            var v = 0
            for c in b[at..<(at + n)] {
                guard (0x30...0x39).contains(c) else { return nil }
                v = v * 10 + Int(c - 0x30)
            }
            return v
        }
        guard b.count >= 19, b[4] == 0x2D, b[7] == 0x2D, b[10] == 0x54 || b[10] == 0x20, b[13] == 0x3A, b[16] == 0x3A,
              let y = number(0, 4), let mo = number(5, 2), let d = number(8, 2), let h = number(11, 2), let mi = number(14, 2),
              let s = number(17, 2) else { return nil }
        var at = 19
        var micro = 0
        if at < b.count, b[at] == 0x2E {
            at += 1
            var digits = 0
            while at < b.count, (0x30...0x39).contains(b[at]) {
                if digits < 6 { micro = micro * 10 + Int(b[at] - 0x30) }
                digits += 1
                at += 1
            }
            guard digits > 0 else { return nil }
            if digits < 6 { for _ in digits..<6 { micro *= 10 } }
        }
        var offset: Int?
        if at < b.count {
            if b[at] == 0x5A, at + 1 == b.count {
                offset = 0
            } else if b[at] == 0x2B || b[at] == 0x2D, at + 6 == b.count, b[at + 3] == 0x3A,
                      let oh = number(at + 1, 2), let om = number(at + 4, 2) {
                offset = (b[at] == 0x2D ? -1 : 1) * (oh * 3600 + om * 60)
            } else {
                return nil
            }
        }
        self.init(year: y, month: mo, day: d, hour: h, minute: mi, second: s, microsecond: micro, utcOffsetSeconds: offset)
        guard date != nil else { return nil }
    }

    /// The instant this datetime names; a naive datetime is read as UTC. Nil when a field is out of range.
    public var date: Date? {
        guard (1...9999).contains(year), (1...12).contains(month), (1...31).contains(day), (0...23).contains(hour),
              (0...59).contains(minute), (0...59).contains(second), (0...999_999).contains(microsecond) else { return nil }
        let days = PythonDateTime.days(fromCivil: Int64(year), Int64(month), Int64(day))
        let seconds = days * 86_400 + Int64(hour * 3600 + minute * 60 + second) - Int64(utcOffsetSeconds ?? 0)
        return Date(timeIntervalSince1970: Double(seconds) + Double(microsecond) / 1_000_000)
    }

    // Howard Hinnant's civil-calendar algorithms (days since 1970-01-01, proleptic Gregorian).
    static func days(fromCivil y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? yoe + era * 400 + 1 : yoe + era * 400, m, d)
    }
}

extension PythonValue: Codable {
    private struct DictKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// Writes the value in a coder's terms (for formats other than Python's): `None` as nil, numbers,
    /// text and bytes as themselves, lists, tuples and sets as arrays, a dict with `str` keys as a keyed
    /// container (other keys are an error), a datetime as a `Date`, a decimal as its text, a UUID as itself.
    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .list(let items), .tuple(let items), .set(let items):
            var c = encoder.unkeyedContainer()
            for item in items { try c.encode(item) }
        case .dict(let items):
            var c = encoder.container(keyedBy: DictKey.self)
            for item in items {
                guard case .string(let k) = item.key else {
                    throw EncodingError.invalidValue(self, EncodingError.Context(codingPath: encoder.codingPath, debugDescription: "a dict key that is not a str"))
                }
                try c.encode(item.value, forKey: DictKey(stringValue: k))
            }
        default:
            var c = encoder.singleValueContainer()
            switch self {
            case .none: try c.encodeNil()
            case .bool(let b): try c.encode(b)
            case .int(let i): try c.encode(i)
            case .float(let d): try c.encode(d)
            case .string(let s): try c.encode(s)
            case .bytes(let b): try c.encode(b)
            case .datetime(let dt):
                guard let date = dt.date else {
                    throw EncodingError.invalidValue(self, EncodingError.Context(codingPath: encoder.codingPath, debugDescription: "a datetime out of range"))
                }
                try c.encode(date)
            case .decimal(let s): try c.encode(s)
            case .uuid(let u): try c.encode(u)
            case .list, .tuple, .set, .dict: break  // handled above
            }
        }
    }

    /// Reads a value of unknown shape from a coder: nil, a bool, an int, a float, a string, an array
    /// (a list) or a keyed container (a dict with `str` keys), tried in that order.
    public init(from decoder: any Decoder) throws {
        if let c = try? decoder.singleValueContainer() {
            if c.decodeNil() { self = .none; return }
            if let b = try? c.decode(Bool.self) { self = .bool(b); return }
            if let i = try? c.decode(Int.self) { self = .int(i); return }
            if let d = try? c.decode(Double.self) { self = .float(d); return }
            if let s = try? c.decode(String.self) { self = .string(s); return }
        }
        if var c = try? decoder.unkeyedContainer() {
            var items: [PythonValue] = []
            while !c.isAtEnd { items.append(try c.decode(PythonValue.self)) }
            self = .list(items)
            return
        }
        let c = try decoder.container(keyedBy: DictKey.self)
        self = .dict(try c.allKeys.map { PythonDictItem(.string($0.stringValue), try c.decode(PythonValue.self, forKey: $0)) })
    }
}

extension PythonValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByNilLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral {
    /// A `str`.
    public init(stringLiteral value: String) { self = .string(value) }
    /// An `int`.
    public init(integerLiteral value: Int) { self = .int(value) }
    /// A `float`.
    public init(floatLiteral value: Double) { self = .float(value) }
    /// A `bool`.
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    /// `None`.
    public init(nilLiteral: ()) { self = .none }
    /// A `list`.
    public init(arrayLiteral elements: PythonValue...) { self = .list(elements) }
    /// A `dict` with `str` keys, in the literal's order.
    public init(dictionaryLiteral elements: (String, PythonValue)...) {
        self = .dict(elements.map { PythonDictItem(.string($0.0), $0.1) })
    }
}
