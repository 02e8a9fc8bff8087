/// Python's pickle format, for values Tandem shares with Python programs (what the `"django"`
/// serializer stores, available on its own).
public enum Pickle {
    /// `value` as a pickle (protocol 5, laid out as CPython writes it), mapped to Python values as
    /// ``PythonValue`` describes. Throws ``PickleError`` for a value Python cannot hold (an integer
    /// beyond 64 bits, a datetime out of range).
    public static func dumps<V: Encodable>(_ value: V) throws -> [UInt8] {
        try PickleWriter.write(try PythonValueEncoder.encode(value))
    }

    /// The value in a pickle, read as data only (never code: see ``PythonValue``). Throws
    /// ``PickleError`` for a pickle that is not data Tandem reads, `DecodingError` when its value does
    /// not fit `type`.
    public static func loads<V: Decodable>(_ bytes: [UInt8], as type: V.Type = V.self) throws -> V {
        try PythonValueDecoder.decode(type, from: try PickleReader.read(bytes))
    }
}
