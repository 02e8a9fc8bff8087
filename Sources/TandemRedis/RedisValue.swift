import CHiredis
import TandemCache

/// A Redis reply, copied out of hiredis's reply object (which is freed right after).
enum RedisValue: Sendable, Equatable {
    case status(String)
    case error(String)
    case integer(Int64)
    case bulk([UInt8])
    case null
    case array([RedisValue])

    /// Copies a `redisReply*` (the caller frees it).
    init(reply: UnsafeMutableRawPointer) {
        let r = reply.assumingMemoryBound(to: redisReply.self).pointee
        func text() -> [UInt8] {
            guard let str = r.str, r.len > 0 else { return [] }
            return str.withMemoryRebound(to: UInt8.self, capacity: r.len) { Array(UnsafeBufferPointer(start: $0, count: r.len)) }
        }
        switch r.type {
        case chiredis_reply_string: self = .bulk(text())
        case chiredis_reply_integer: self = .integer(r.integer)
        case chiredis_reply_nil: self = .null
        case chiredis_reply_status: self = .status(String(decoding: text(), as: UTF8.self))
        case chiredis_reply_error: self = .error(String(decoding: text(), as: UTF8.self))
        case chiredis_reply_array:
            var items: [RedisValue] = []
            items.reserveCapacity(r.elements)
            if let elements = r.element {
                for i in 0..<r.elements {
                    if let e = elements[i] { items.append(RedisValue(reply: UnsafeMutableRawPointer(e))) } else { items.append(.null) }
                }
            }
            self = .array(items)
        default:
            self = .error("unknown reply type \(r.type)")
        }
    }
}
