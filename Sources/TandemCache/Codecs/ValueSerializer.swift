import Foundation

/// How a cache turns values into stored bytes: `OPTIONS.SERIALIZER`.
public enum ValueSerializer: String, Sendable, CaseIterable {
    /// Tandem's own format (the default): text, bytes and numbers as they are, other `Codable`
    /// values through the cache's ``CacheCodec`` (JSON).
    case tandem
    /// What Django writes: on Redis, what Django's `RedisCache` and django-redis's default
    /// `PickleSerializer` write (an `int` as its decimal text, anything else pickle protocol 5; reading
    /// tries the integer first, then pickle protocols 0 to 5); on memcached, what Django's
    /// `PyMemcacheCache` writes (pymemcache's `pickle_serde`: bytes, text, integers and pickles, each
    /// with its item flag; with a `COMPRESSOR`, pymemcache's `CompressedSerde`: a value longer than
    /// the compressor's minimum length is stored compressed, with the compressed flag, when that is
    /// not longer). Values map to Python values as ``PythonValue`` describes.
    case django
    /// What django-redis's `JSONSerializer` writes: an `int` as its decimal text, anything else
    /// `json.dumps` with Django's `DjangoJSONEncoder` (a datetime as ISO 8601 text to the
    /// millisecond, a decimal and a UUID as text; bytes and sets have no JSON form and are an error).
    /// Reading gives back what `json.loads` gives: a `Date`, `Decimal` or `UUID` reads from its text.
    case json

    /// The setting's value for `OPTIONS.SERIALIZER`, or an error that names the accepted ones.
    static func parse(_ raw: String?, alias: String) throws -> ValueSerializer {
        guard let raw else { return .tandem }
        if let s = ValueSerializer(rawValue: raw.lowercased()) { return s }
        throw CacheError.invalidSetting(alias: alias, field: "OPTIONS.SERIALIZER",
                                        reason: "expected \"tandem\", \"django\" or \"json\", got \"\(raw)\"")
    }
}

/// The `"django"` format: Swift values as Python values, written the way Django's cache backends
/// write them, and read back from what they wrote.
enum DjangoValueCoding {
    /// pymemcache's item flags (`pymemcache/serde.py`).
    enum Flag {
        static let bytes: UInt32 = 0
        static let pickle: UInt32 = 1 << 0
        static let integer: UInt32 = 1 << 1
        static let long: UInt32 = 1 << 2
        static let compressed: UInt32 = 1 << 3
        static let text: UInt32 = 1 << 4
    }

    /// `value` as Django stores it. `flags`: the backend keeps item flags (memcached, LocMem), so text
    /// and bytes are stored as they are with their flag, as pymemcache does; without flags (Redis)
    /// everything but an `int` is a pickle.
    static func encode<V: Encodable>(_ value: V, flags: Bool, compressor: ValueCompressor? = nil, json: Bool = false,
                                     key: String) throws -> StoredValue {
        let python: PythonValue
        do {
            python = try PythonValueEncoder.encode(value)
        } catch {
            throw CacheError.encodingFailed(key: key, type: String(describing: V.self), reason: "\(error)")
        }
        do {
            // An int stays decimal text (never compressed), so that `incr` works on both sides.
            if case .int(let i) = python { return StoredValue(bytes: Array(String(i).utf8), kind: ValueKind(rawValue: flags && !json ? Flag.integer : 0)) }
            var stored: StoredValue
            if json {
                // django-redis's JSON serializer (no item flags: it is a Redis client's format).
                stored = StoredValue(bytes: try PythonJSON.write(python), kind: .untagged)
                if let compressor, stored.bytes.count > compressor.minimumLength { stored.bytes = try compressor.compress(stored.bytes) }
                return stored
            }
            switch python {
            case .string(let s) where flags: stored = StoredValue(bytes: Array(s.utf8), kind: ValueKind(rawValue: Flag.text))
            case .bytes(let b) where flags: stored = StoredValue(bytes: b, kind: ValueKind(rawValue: Flag.bytes))
            default: stored = StoredValue(bytes: try PickleWriter.write(python), kind: ValueKind(rawValue: flags ? Flag.pickle : 0))
            }
            guard let compressor, stored.bytes.count > compressor.minimumLength else { return stored }
            let compressed = try compressor.compress(stored.bytes)
            if flags {
                // pymemcache's CompressedSerde: the compressed form only when it is not longer, and
                // the compressed flag beside the serializer's.
                if compressed.count > stored.bytes.count { return stored }
                return StoredValue(bytes: compressed, kind: ValueKind(rawValue: stored.kind.rawValue | Flag.compressed))
            }
            // django-redis compresses what its serializer wrote when it is longer than the minimum.
            stored.bytes = compressed
            return stored
        } catch {
            throw CacheError.encodingFailed(key: key, type: String(describing: V.self), reason: "\(error)")
        }
    }

    /// The Python value in `stored`, read as Django reads it.
    static func python(_ stored: StoredValue, flags: Bool, compressor: ValueCompressor? = nil, json: Bool = false) throws -> PythonValue {
        if json {
            if let i = try pythonInt(stored.bytes) { return .int(i) }
            if let compressor, let plain = try compressor.decompress(stored.bytes) { return try PythonJSON.read(plain) }
            return try PythonJSON.read(stored.bytes)
        }
        if flags {
            let f = stored.kind.rawValue
            if f & Flag.compressed != 0 {
                // pymemcache's CompressedSerde (zlib unless the cache names its COMPRESSOR).
                let codec = compressor ?? .zlib
                guard let plain = try codec.decompress(stored.bytes) else {
                    throw PickleError("the item flags (\(f)) say compressed, and the value does not decompress with \(codec.rawValue)")
                }
                return try python(StoredValue(bytes: plain, kind: ValueKind(rawValue: f & ~Flag.compressed)), flags: true)
            }
            if f == Flag.bytes { return .bytes(stored.bytes) }
            if f & Flag.text != 0 {
                guard let s = String(validating: stored.bytes, as: UTF8.self) else { throw PickleError("a text value is not valid UTF-8") }
                return .string(s)
            }
            if f & (Flag.integer | Flag.long) != 0 {
                guard let i = try pythonInt(stored.bytes) else { throw PickleError("an integer value is not a number") }
                return .int(i)
            }
            if f & Flag.pickle != 0 { return try PickleReader.read(stored.bytes) }
            return .bytes(stored.bytes)
        }
        if let i = try pythonInt(stored.bytes) { return .int(i) }
        // django-redis: a value that does not decompress is read as it is.
        if let compressor, let plain = try compressor.decompress(stored.bytes) { return try PickleReader.read(plain) }
        return try PickleReader.read(stored.bytes)
    }

    /// Decodes `stored` as `V`; nil for a stored `None` when `V` is neither optional nor ``PythonValue``
    /// (as the tandem format does for a stored nil).
    static func decode<V: Decodable>(_ type: V.Type, from stored: StoredValue, flags: Bool, compressor: ValueCompressor? = nil,
                                     json: Bool = false, key: String) throws -> V? {
        do {
            let value = try python(stored, flags: flags, compressor: compressor, json: json)
            // A stored None is a value for `V?` and for `PythonValue` itself; for any other `V`, nil.
            if value == .none, V.self != PythonValue.self, !(V.self is any CacheOptional.Type) { return nil }
            return try PythonValueDecoder.decode(V.self, from: value)
        } catch let error as PickleError {
            throw CacheError.decodingFailed(key: key, type: String(describing: V.self), reason: error.description)
        } catch let error as CompressionError {
            throw CacheError.decodingFailed(key: key, type: String(describing: V.self), reason: error.description)
        } catch let error as DecodingError {
            throw CacheError.decodingFailed(key: key, type: String(describing: V.self), reason: Self.describe(error))
        }
    }

    /// Python's `int(data)` for what Django writes: optional surrounding whitespace, a sign, digits
    /// (with single underscores between them). Nil when the bytes are not such a number; an error when
    /// they are one that does not fit in 64 bits.
    static func pythonInt(_ bytes: [UInt8]) throws -> Int? {
        var b = bytes[...]
        func space(_ c: UInt8) -> Bool { c == 0x20 || (0x09...0x0D).contains(c) }
        while let f = b.first, space(f) { b.removeFirst() }
        while let l = b.last, space(l) { b.removeLast() }
        var negative = false
        if let f = b.first, f == 0x2B || f == 0x2D {
            negative = f == 0x2D
            b.removeFirst()
        }
        guard let first = b.first, let last = b.last, (0x30...0x39).contains(first), (0x30...0x39).contains(last) else { return nil }
        var magnitude: UInt64 = 0
        var overflow = false
        var previousUnderscore = false
        for c in b {
            if c == 0x5F {
                if previousUnderscore { return nil }
                previousUnderscore = true
                continue
            }
            previousUnderscore = false
            guard (0x30...0x39).contains(c) else { return nil }
            let (m1, o1) = magnitude.multipliedReportingOverflow(by: 10)
            let (m2, o2) = m1.addingReportingOverflow(UInt64(c - 0x30))
            overflow = overflow || o1 || o2
            magnitude = m2
        }
        let limit = negative ? UInt64(Int.max) + 1 : UInt64(Int.max)
        if overflow || magnitude > limit { throw PickleError("an int beyond 64 bits") }
        return negative ? Int(truncatingIfNeeded: 0 &- magnitude) : Int(magnitude)
    }

    private static func describe(_ error: DecodingError) -> String {
        switch error {
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c): return c.debugDescription
        case .keyNotFound(let key, let c):
            let at = c.codingPath.isEmpty ? "" : " at \(c.codingPath.map(\.stringValue).joined(separator: "."))"
            return "the dict has no key '\(key.stringValue)'\(at)"
        @unknown default: return "\(error)"
        }
    }
}
