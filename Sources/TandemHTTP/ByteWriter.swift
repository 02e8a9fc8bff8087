import Foundation
import HTTPTypes
import Logging
import Synchronization
import TandemCache
import TandemLoop

/// Appends fixed-width integers and length-prefixed byte runs.
struct ByteWriter {
    var out: [UInt8] = []
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
    mutating func bytes(_ b: [UInt8], prefixed: Bool = true) {
        if prefixed { u64(UInt64(b.count)) }
        out += b
    }
    mutating func string(_ s: String) { bytes(Array(s.utf8)) }
}
