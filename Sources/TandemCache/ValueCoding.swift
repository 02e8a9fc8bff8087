import Foundation

/// What a cache can store: any `Codable & Sendable` value. `String`, `[UInt8]`, `Data`, integers,
/// `Double`, `Float` and `Bool` are stored natively (integers as decimal text so that `incr` and other
/// clients work); `Optional` stores `nil` as a null that is a value, not a miss; everything else goes
/// through the cache's ``CacheCodec``.
public typealias CacheValue = Codable & Sendable

/// Turns `Codable` values into bytes and back, for values that are not stored natively.
public protocol CacheCodec: Sendable {
    /// Encodes a value into bytes.
    func encode<V: Encodable>(_ value: V) throws -> [UInt8]
    /// Decodes a value of type `type` from bytes.
    func decode<V: Decodable>(_ type: V.Type, from bytes: [UInt8]) throws -> V
}

/// The default codec: JSON, readable by other clients.
public struct JSONCacheCodec: CacheCodec {
    /// Creates the JSON codec.
    public init() {}

    /// Encodes `value` as JSON (sorted keys, so equal values give equal bytes).
    public func encode<V: Encodable>(_ value: V) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(value))
    }

    /// Decodes JSON bytes.
    public func decode<V: Decodable>(_ type: V.Type, from bytes: [UInt8]) throws -> V {
        try JSONDecoder().decode(type, from: Data(bytes))
    }
}

/// Lets the coder see through `Optional` without the runtime unwrapping it.
protocol CacheOptional {
    var isNone: Bool { get }
    func encodeWrapped(codec: any CacheCodec, key: String) throws -> StoredValue
    static func decodeWrapped(_ value: StoredValue, codec: any CacheCodec, key: String) throws -> Self?
}

extension Optional: CacheOptional where Wrapped: Codable {
    var isNone: Bool { self == nil }
    func encodeWrapped(codec: any CacheCodec, key: String) throws -> StoredValue {
        switch self {
        case .none: return .null
        case .some(let w): return try ValueCoding.encode(w, codec: codec, key: key)
        }
    }
    static func decodeWrapped(_ value: StoredValue, codec: any CacheCodec, key: String) throws -> Self? {
        if value.isNull { return .some(.none) }
        guard let w = try ValueCoding.decode(Wrapped.self, from: value, codec: codec, key: key) else { return nil }
        return .some(w)
    }
}

/// The one place where values become bytes and bytes become values.
enum ValueCoding {
    static func encode<V: Encodable>(_ value: V, codec: any CacheCodec, key: String) throws -> StoredValue {
        // Exact-type checks first: a metatype comparison costs a pointer compare, and once the types are
        // known to be identical `unsafeBitCast` is an exact reinterpretation (same type, same layout).
        if V.self == String.self { return StoredValue(bytes: Array(unsafeBitCast(value, to: String.self).utf8), kind: .string) }
        if V.self == [UInt8].self { return StoredValue(bytes: unsafeBitCast(value, to: [UInt8].self), kind: .bytes) }
        if V.self == Int.self { return StoredValue(bytes: storedIntegerBytes(Int64(unsafeBitCast(value, to: Int.self))), kind: .integer) }
        if V.self == Data.self, let d = value as? Data { return StoredValue(bytes: Array(d), kind: .data) }
        if V.self == Double.self { return StoredValue(bytes: Array(unsafeBitCast(value, to: Double.self).description.utf8), kind: .double) }
        if V.self == Bool.self { return StoredValue(bytes: Array((unsafeBitCast(value, to: Bool.self) ? "true" : "false").utf8), kind: .bool) }
        if let o = value as? any CacheOptional { return try o.encodeWrapped(codec: codec, key: key) }
        if let i = value as? any FixedWidthInteger { return StoredValue(bytes: Array(String(describing: i).utf8), kind: .integer) }
        if let f = value as? Float { return StoredValue(bytes: Array(f.description.utf8), kind: .double) }
        do {
            return StoredValue(bytes: try codec.encode(value), kind: .codable)
        } catch {
            throw CacheError.encodingFailed(key: key, type: String(describing: V.self), reason: "\(error)")
        }
    }

    /// Decodes `value` as `V`. Returns nil for a stored null when `V` is not optional (the caller
    /// asked for a type that cannot hold null; ask for `V?` to see it).
    static func decode<V: Decodable>(_ type: V.Type, from value: StoredValue, codec: any CacheCodec, key: String) throws -> V? {
        // The common exact types first (see `encode` for why the bit casts are exact).
        if V.self == [UInt8].self {
            return value.isNull ? nil : unsafeBitCast(value.bytes, to: V.self)
        }
        if V.self == String.self {
            if value.isNull { return nil }
            guard let s = String(validating: value.bytes, as: UTF8.self) else {
                throw CacheError.decodingFailed(key: key, type: "String", reason: "the stored bytes are not valid UTF-8")
            }
            return unsafeBitCast(s, to: V.self)
        }
        if let opt = V.self as? any CacheOptional.Type {
            return try opt.decodeWrapped(value, codec: codec, key: key) as? V
        }
        if value.isNull { return nil }
        func fail(_ reason: String) -> CacheError {
            CacheError.decodingFailed(key: key, type: String(describing: V.self), reason: reason)
        }
        if V.self == Data.self { return Data(value.bytes) as? V }
        if V.self == Int.self {
            guard let i = parseStoredInteger(value.bytes) else { throw fail("the stored value is not an integer") }
            return Int(i) as? V
        }
        if V.self == Double.self || V.self == Float.self {
            guard let s = String(validating: value.bytes, as: UTF8.self), let d = Double(s) else {
                throw fail("the stored value is not a number")
            }
            return (V.self == Float.self ? Float(d) as Any : d as Any) as? V
        }
        if V.self == Bool.self {
            switch value.bytes {
            case Array("true".utf8), Array("1".utf8): return true as? V
            case Array("false".utf8), Array("0".utf8): return false as? V
            default: throw fail("the stored value is not a boolean")
            }
        }
        if let intType = V.self as? any FixedWidthInteger.Type {
            guard let i = parseInteger(intType, value.bytes) else { throw fail("the stored value is not an integer in range") }
            return i as? V
        }
        do {
            return try codec.decode(V.self, from: value.bytes)
        } catch {
            throw fail("\(error)")
        }
    }

    private static func parseInteger<I: FixedWidthInteger>(_ type: I.Type, _ bytes: [UInt8]) -> I? {
        guard let s = String(validating: bytes, as: UTF8.self) else { return nil }
        return I(s, radix: 10)
    }
}
