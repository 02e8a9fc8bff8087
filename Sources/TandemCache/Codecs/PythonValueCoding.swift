import Foundation

/// Values with a Python form of their own, ahead of what their `Codable` conformance would make.
private func pythonForm(of value: any Encodable) throws -> PythonValue? {
    switch value {
    case let v as PythonValue: return v
    case let v as String: return .string(v)
    case let v as Bool: return .bool(v)
    case let v as Int: return .int(v)
    case let v as Double: return .float(v)
    case let v as Float: return .float(Double(v))
    case let v as [UInt8]: return .bytes(v)
    case let v as Data: return .bytes(Array(v))
    case let v as Date: return .datetime(PythonDateTime(v))
    case let v as Decimal: return .decimal(v.description)
    case let v as UUID: return .uuid(v)
    case let v as any FixedWidthInteger:
        guard let i = Int(exactly: v) else { throw PickleError("\(v) does not fit in 64 bits") }
        return .int(i)
    case let v as any PythonSetEncodable: return .set(try v.pythonElements())
    default: return nil
    }
}

/// `Set` is written as a Python `set` (its `Codable` form is an array).
private protocol PythonSetEncodable {
    func pythonElements() throws -> [PythonValue]
}

extension Set: PythonSetEncodable where Element: Encodable {
    fileprivate func pythonElements() throws -> [PythonValue] { try map { try PythonValueEncoder.encode($0) } }
}

/// Turns an `Encodable` value into a ``PythonValue``.
enum PythonValueEncoder {
    static func encode<V: Encodable>(_ value: V) throws -> PythonValue {
        // The exact types first: a metatype comparison, then an exact reinterpretation.
        if V.self == PythonValue.self { return unsafeBitCast(value, to: PythonValue.self) }
        if V.self == String.self { return .string(unsafeBitCast(value, to: String.self)) }
        if let direct = try pythonForm(of: value) { return direct }
        let encoder = PyEncoder(codingPath: [])
        try value.encode(to: encoder)
        return try encoder.slot.value()
    }
}

/// Where an encoder's or container's value goes: filled once, read when the encoding is done.
private final class PySlot {
    enum Content {
        case empty
        case value(PythonValue)
        case dict(PyDict)
        case list(PyList)
    }
    var content: Content = .empty

    func value() throws -> PythonValue {
        switch content {
        case .empty: return .dict([])
        case .value(let v): return v
        case .dict(let d): return .dict(try d.items.map { PythonDictItem($0.0, try $0.1.value()) })
        case .list(let l): return .list(try l.items.map { try $0.value() })
        }
    }
}

private final class PyDict { var items: [(PythonValue, PySlot)] = [] }

/// A coding key as a Python dict key: an `int` for a key that is a number (a `[Int: V]`'s keys), else a `str`.
private func pythonKey(_ key: some CodingKey) -> PythonValue {
    if let i = key.intValue, String(i) == key.stringValue { return .int(i) }
    return .string(key.stringValue)
}
private final class PyList { var items: [PySlot] = [] }

private struct PyEncoder: Encoder {
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }
    let slot = PySlot()

    init(codingPath: [any CodingKey]) { self.codingPath = codingPath }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        let dict: PyDict
        if case .dict(let d) = slot.content { dict = d } else {
            dict = PyDict()
            slot.content = .dict(dict)
        }
        return KeyedEncodingContainer(PyKeyed<Key>(dict: dict, codingPath: codingPath))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        let list: PyList
        if case .list(let l) = slot.content { list = l } else {
            list = PyList()
            slot.content = .list(list)
        }
        return PyUnkeyed(list: list, codingPath: codingPath)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer { PySingle(slot: slot, codingPath: codingPath) }
}

/// Encodes `value` into `slot`: its own Python form, or what its conformance writes.
private func encodeInto<T: Encodable>(_ slot: PySlot, _ value: T, codingPath: [any CodingKey]) throws {
    if let direct = try pythonForm(of: value) {
        slot.content = .value(direct)
        return
    }
    let nested = PyEncoder(codingPath: codingPath)
    try value.encode(to: nested)
    slot.content = nested.slot.content
}

private struct PyKeyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let dict: PyDict
    let codingPath: [any CodingKey]

    private func add(_ key: Key) -> PySlot {
        let slot = PySlot()
        dict.items.append((pythonKey(key), slot))
        return slot
    }

    mutating func encodeNil(forKey key: Key) throws { add(key).content = .value(.none) }
    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        try encodeInto(add(key), value, codingPath: codingPath + [key])
    }
    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
        let d = PyDict()
        add(key).content = .dict(d)
        return KeyedEncodingContainer(PyKeyed<NestedKey>(dict: d, codingPath: codingPath + [key]))
    }
    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        let l = PyList()
        add(key).content = .list(l)
        return PyUnkeyed(list: l, codingPath: codingPath + [key])
    }
    mutating func superEncoder() -> any Encoder {
        // The "super" key by name: the container's own key type need not have such a case.
        let e = PyEncoder(codingPath: codingPath + [IndexKey(stringValue: "super")])
        dict.items.append((.string("super"), e.slot))
        return e
    }
    mutating func superEncoder(forKey key: Key) -> any Encoder {
        let e = PyEncoder(codingPath: codingPath + [key])
        dict.items.append((pythonKey(key), e.slot))
        return e
    }
}

private struct PyUnkeyed: UnkeyedEncodingContainer {
    let list: PyList
    let codingPath: [any CodingKey]
    var count: Int { list.items.count }

    private func add() -> PySlot {
        let slot = PySlot()
        list.items.append(slot)
        return slot
    }

    mutating func encodeNil() throws { add().content = .value(.none) }
    mutating func encode<T: Encodable>(_ value: T) throws { try encodeInto(add(), value, codingPath: codingPath) }
    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        let d = PyDict()
        add().content = .dict(d)
        return KeyedEncodingContainer(PyKeyed<NestedKey>(dict: d, codingPath: codingPath))
    }
    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let l = PyList()
        add().content = .list(l)
        return PyUnkeyed(list: l, codingPath: codingPath)
    }
    mutating func superEncoder() -> any Encoder {
        let e = PyEncoder(codingPath: codingPath)
        list.items.append(e.slot)
        return e
    }
}

private struct PySingle: SingleValueEncodingContainer {
    let slot: PySlot
    let codingPath: [any CodingKey]
    mutating func encodeNil() throws { slot.content = .value(.none) }
    mutating func encode<T: Encodable>(_ value: T) throws { try encodeInto(slot, value, codingPath: codingPath) }
}

// MARK: decoding

/// Turns a ``PythonValue`` into a `Decodable` value.
enum PythonValueDecoder {
    static func decode<V: Decodable>(_ type: V.Type, from value: PythonValue) throws -> V {
        try decodeValue(type, value, codingPath: [])
    }
}

private func mismatch(_ expected: String, _ value: PythonValue, _ path: [any CodingKey]) -> DecodingError {
    let at = path.isEmpty ? "" : " at \(path.map(\.stringValue).joined(separator: "."))"
    return DecodingError.typeMismatch(Any.self, DecodingError.Context(
        codingPath: path, debugDescription: "expected \(expected)\(at), found a Python \(value.typeName)"))
}

/// Decodes `type` from `value`: the types with a Python form of their own first, then the type's
/// conformance reading this value.
private func decodeValue<T: Decodable>(_ type: T.Type, _ value: PythonValue, codingPath: [any CodingKey]) throws -> T {
    // The exact-type checks compare metatypes; once equal, `unsafeBitCast` is an exact reinterpretation.
    if T.self == PythonValue.self { return unsafeBitCast(value, to: T.self) }
    if T.self == String.self {
        guard case .string(let s) = value, let v = s as? T else { throw mismatch("str", value, codingPath) }
        return v
    }
    if T.self == Int.self {
        guard case .int(let i) = value, let v = i as? T else { throw mismatch("int", value, codingPath) }
        return v
    }
    if T.self == Bool.self {
        guard case .bool(let b) = value, let v = b as? T else { throw mismatch("bool", value, codingPath) }
        return v
    }
    if T.self == Double.self || T.self == Float.self {
        let d: Double
        switch value {
        case .float(let f): d = f
        case .int(let i): d = Double(i)
        default: throw mismatch("float", value, codingPath)
        }
        return (T.self == Float.self ? Float(d) as Any : d as Any) as! T  // T is exactly Float or Double here
    }
    if T.self == [UInt8].self || T.self == Data.self {
        guard case .bytes(let b) = value else { throw mismatch("bytes", value, codingPath) }
        return (T.self == Data.self ? Data(b) as Any : b as Any) as! T  // T is exactly Data or [UInt8] here
    }
    if T.self == Date.self {
        // A datetime, or its ISO 8601 text (what Django's JSON encoder writes).
        var found: PythonDateTime?
        switch value {
        case .datetime(let dt): found = dt
        case .string(let s): found = PythonDateTime(isoText: s)
        default: break
        }
        guard let date = found?.date, let v = date as? T else { throw mismatch("datetime.datetime", value, codingPath) }
        return v
    }
    if T.self == Decimal.self {
        let text: String
        switch value {
        case .decimal(let s), .string(let s): text = s
        case .int(let i): text = String(i)
        default: throw mismatch("decimal.Decimal", value, codingPath)
        }
        guard let d = Decimal(string: text, locale: Locale(identifier: "en_US_POSIX")), !d.isNaN, let v = d as? T else {
            throw mismatch("a finite decimal.Decimal", value, codingPath)
        }
        return v
    }
    if T.self == UUID.self {
        switch value {
        case .uuid(let u): if let v = u as? T { return v }
        case .string(let s): if let u = UUID(uuidString: s), let v = u as? T { return v }
        default: break
        }
        throw mismatch("uuid.UUID", value, codingPath)
    }
    if let integer = T.self as? any FixedWidthInteger.Type {
        guard case .int(let i) = value else { throw mismatch("int", value, codingPath) }
        guard let v = integer.init(exactly: i) as? T else { throw mismatch("an int in range of \(T.self)", value, codingPath) }
        return v
    }
    return try T(from: PyDecoder(value: value, codingPath: codingPath))
}

extension PythonValue {
    /// The Python type's name, for messages.
    var typeName: String {
        switch self {
        case .none: "None"
        case .bool: "bool"
        case .int: "int"
        case .float: "float"
        case .string: "str"
        case .bytes: "bytes"
        case .list: "list"
        case .tuple: "tuple"
        case .dict: "dict"
        case .set: "set"
        case .datetime: "datetime.datetime"
        case .decimal: "decimal.Decimal"
        case .uuid: "uuid.UUID"
        }
    }
}

private struct IndexKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init(intValue: Int) {
        self.stringValue = String(intValue)
        self.intValue = intValue
    }
}

private struct PyDecoder: Decoder {
    let value: PythonValue
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .dict(let items) = value else { throw mismatch("dict", value, codingPath) }
        return KeyedDecodingContainer(PyKeyedDecoding<Key>(items: items, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        switch value {
        case .list(let items), .tuple(let items), .set(let items): return PyUnkeyedDecoding(items: items, codingPath: codingPath)
        default: throw mismatch("list", value, codingPath)
        }
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { PySingleDecoding(value: value, codingPath: codingPath) }
}

private struct PyKeyedDecoding<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let items: [PythonDictItem]
    let codingPath: [any CodingKey]

    /// A Python key as a coding key: `str` keys by name, `int` keys by number.
    private static func codingKey(_ k: PythonValue) -> Key? {
        switch k {
        case .string(let s): return Key(stringValue: s)
        case .int(let i): return Key(intValue: i) ?? Key(stringValue: String(i))
        default: return nil
        }
    }

    var allKeys: [Key] { items.compactMap { Self.codingKey($0.key) } }

    private func find(_ key: Key) -> PythonValue? {
        for item in items.reversed() {
            switch item.key {
            case .string(let s) where s == key.stringValue: return item.value
            case .int(let i) where key.intValue == i || (key.intValue == nil && key.stringValue == String(i)): return item.value
            default: continue
            }
        }
        return nil
    }

    private func required(_ key: Key) throws -> PythonValue {
        guard let v = find(key) else {
            throw DecodingError.keyNotFound(key, DecodingError.Context(codingPath: codingPath, debugDescription: "the dict has no key '\(key.stringValue)'"))
        }
        return v
    }

    func contains(_ key: Key) -> Bool { find(key) != nil }
    func decodeNil(forKey key: Key) throws -> Bool { find(key).map { $0 == .none } ?? true }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try decodeValue(type, try required(key), codingPath: codingPath + [key])
    }
    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        try PyDecoder(value: try required(key), codingPath: codingPath + [key]).container(keyedBy: type)
    }
    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try PyDecoder(value: try required(key), codingPath: codingPath + [key]).unkeyedContainer()
    }
    func superDecoder() throws -> any Decoder {
        let value = items.last { $0.key == .string("super") }?.value ?? .none
        return PyDecoder(value: value, codingPath: codingPath + [IndexKey(stringValue: "super")])
    }
    func superDecoder(forKey key: Key) throws -> any Decoder { PyDecoder(value: find(key) ?? .none, codingPath: codingPath + [key]) }
}

private struct PyUnkeyedDecoding: UnkeyedDecodingContainer {
    let items: [PythonValue]
    let codingPath: [any CodingKey]
    var currentIndex = 0
    var count: Int? { items.count }
    var isAtEnd: Bool { currentIndex >= items.count }

    init(items: [PythonValue], codingPath: [any CodingKey]) {
        self.items = items
        self.codingPath = codingPath
    }

    private mutating func next() throws -> PythonValue {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(Any.self, DecodingError.Context(codingPath: codingPath, debugDescription: "the list has only \(items.count) items"))
        }
        defer { currentIndex += 1 }
        return items[currentIndex]
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd, items[currentIndex] == .none else { return false }
        currentIndex += 1
        return true
    }
    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let key = IndexKey(intValue: currentIndex)
        return try decodeValue(type, try next(), codingPath: codingPath + [key])
    }
    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try PyDecoder(value: try next(), codingPath: codingPath).container(keyedBy: type)
    }
    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try PyDecoder(value: try next(), codingPath: codingPath).unkeyedContainer()
    }
    mutating func superDecoder() throws -> any Decoder { PyDecoder(value: try next(), codingPath: codingPath) }
}

private struct PySingleDecoding: SingleValueDecodingContainer {
    let value: PythonValue
    let codingPath: [any CodingKey]
    func decodeNil() -> Bool { value == .none }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try decodeValue(type, value, codingPath: codingPath) }
}
