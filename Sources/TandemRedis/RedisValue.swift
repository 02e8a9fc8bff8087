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

/// Builds the argv arrays hiredis wants (pointers and explicit lengths: binary-safe, so a key with
/// CR, LF, space or NUL is one argument and can never become a second command).
func withRedisArgv<R>(_ args: [[UInt8]], _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafeMutablePointer<Int>) -> R) -> R {
    var flat: [UInt8] = []
    flat.reserveCapacity(args.reduce(0) { $0 + $1.count } + 1)
    var offsets: [Int] = []
    var lengths: [Int] = []
    for a in args {
        offsets.append(flat.count)
        lengths.append(a.count)
        flat += a
    }
    flat.append(0)  // never empty, so the base address exists
    return flat.withUnsafeBufferPointer { buf in
        let base = UnsafeRawPointer(buf.baseAddress!).assumingMemoryBound(to: CChar.self)
        var pointers: [UnsafePointer<CChar>?] = offsets.map { base + $0 }
        return pointers.withUnsafeMutableBufferPointer { p in
            lengths.withUnsafeMutableBufferPointer { l in body(Int32(args.count), p.baseAddress!, l.baseAddress!) }
        }
    }
}

/// A command's arguments as bytes.
@inline(__always)
func cmd(_ parts: [UInt8]...) -> [[UInt8]] { parts }

extension String {
    @inline(__always) var bytes: [UInt8] { Array(utf8) }
}
