import Foundation
import HTTPTypes
import Logging
import Synchronization
import TandemCache
import TandemLoop

/// Reads what ``ByteWriter`` wrote; every read is bounds-checked.
struct ByteReader {
    private let data: [UInt8]
    private var at = 0
    init(_ data: [UInt8]) { self.data = data }
    var atEnd: Bool { at == data.count }
    mutating func take(_ n: Int) -> ArraySlice<UInt8>? {
        guard n >= 0, data.count - at >= n else { return nil }
        defer { at += n }
        return data[at..<(at + n)]
    }
    mutating func u64() -> UInt64? {
        guard let s = take(8) else { return nil }
        return s.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }
    mutating func bytes() -> [UInt8]? {
        guard let n = u64(), n <= UInt64(Int.max), let s = take(Int(n)) else { return nil }
        return Array(s)
    }
    mutating func string() -> String? { bytes().flatMap { String(validating: $0, as: UTF8.self) } }
}
