import Dispatch
import Foundation
import Logging
import Synchronization
import TandemCache
import TandemTransport
import TandemLoop

/// Redis Cluster's key slots: CRC16 (XMODEM) of the key, or of its hash tag, modulo 16384.
enum ClusterSlot {
    static let count = 16384

    private static let table: [UInt16] = (0..<256).map { byte -> UInt16 in
        var crc = UInt16(byte) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }

    static func crc16(_ bytes: some Collection<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for b in bytes { crc = (crc << 8) ^ table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ b)] }
        return crc
    }

    /// The slot of `key`: only the part between the first `{` and the next `}` counts when it is not
    /// empty (a hash tag), so that `{user1}.a` and `{user1}.b` share a slot.
    static func of(_ key: [UInt8]) -> Int {
        if let open = key.firstIndex(of: UInt8(ascii: "{")),
           let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1 {
            return Int(crc16(key[(open + 1)..<close]) & 0x3FFF)
        }
        return Int(crc16(key) & 0x3FFF)
    }
}
