import Foundation

/// A value in cache settings, as JSON or Swift literals give it.
public enum SettingValue: Sendable, Hashable, Decodable, CustomStringConvertible,
    ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    /// Text.
    case string(String)
    /// A whole number.
    case int(Int)
    /// A number with a fraction.
    case double(Double)
    /// true or false.
    case bool(Bool)
    /// A list (a JSON array).
    case list([SettingValue])
    /// Named values (a JSON object).
    case dict([String: SettingValue])
    /// JSON's null (Django's None: for TIMEOUT, no expiry).
    case null

    /// `"text"`.
    public init(stringLiteral value: String) { self = .string(value) }
    /// `42`.
    public init(integerLiteral value: Int) { self = .int(value) }
    /// `0.5`.
    public init(floatLiteral value: Double) { self = .double(value) }
    /// `true`.
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    /// `[...]`.
    public init(arrayLiteral elements: SettingValue...) { self = .list(elements) }
    /// `["NAME": value]`; a repeated name keeps its last value.
    public init(dictionaryLiteral elements: (String, SettingValue)...) {
        self = .dict(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
    /// `nil`.
    public init(nilLiteral: ()) { self = .null }

    /// Decodes any JSON value.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null; return }
        if let b = try? c.decode(Bool.self) { self = .bool(b); return }
        if let i = try? c.decode(Int.self) { self = .int(i); return }
        if let d = try? c.decode(Double.self) { self = .double(d); return }
        if let s = try? c.decode(String.self) { self = .string(s); return }
        if let l = try? c.decode([SettingValue].self) { self = .list(l); return }
        self = .dict(try c.decode([String: SettingValue].self))
    }

    /// The JSON type name, for error messages.
    public var typeName: String {
        switch self {
        case .string: "a string"
        case .int: "an integer"
        case .double: "a number"
        case .bool: "a boolean"
        case .list: "a list"
        case .dict: "an object"
        case .null: "null"
        }
    }

    /// The value as written in settings.
    public var description: String {
        switch self {
        case .string(let s): return "\"\(s)\""
        case .int(let i): return String(i)
        case .double(let d): return String(d)
        case .bool(let b): return String(b)
        case .list(let l): return "[" + l.map(\.description).joined(separator: ", ") + "]"
        case .dict(let d): return "{" + d.sorted { $0.key < $1.key }.map { "\"\($0.key)\": \($0.value)" }.joined(separator: ", ") + "}"
        case .null: return "null"
        }
    }

    /// Infers a value from text (environment variables, URL query strings): integer, number, boolean, or string.
    public static func inferred(from text: String) -> SettingValue {
        if let i = Int(text) { return .int(i) }
        if let d = Double(text) { return .double(d) }
        switch text.lowercased() {
        case "true": return .bool(true)
        case "false": return .bool(false)
        default: return .string(text)
        }
    }
}
