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
/// CR, LF, space or NUL is one argument and can never become a second command). Short commands pin
/// each argument in place (no copy); long ones (MGET of many keys) are flattened into one buffer.
func withRedisArgv<R>(_ args: [[UInt8]], _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafeMutablePointer<Int>) -> R) -> R {
    withUnsafeTemporaryAllocation(of: UnsafePointer<CChar>?.self, capacity: max(1, args.count)) { ptrs in
        withUnsafeTemporaryAllocation(of: Int.self, capacity: max(1, args.count)) { lens in
            if args.count <= 16 {
                return pin(args, 0, ptrs, lens, body)
            }
            var flat: [UInt8] = []
            flat.reserveCapacity(args.reduce(1) { $0 + $1.count })
            for (i, a) in args.enumerated() {
                lens[i] = a.count
                flat += a
            }
            flat.append(0)
            return flat.withUnsafeBufferPointer { buf in
                let base = UnsafeRawPointer(buf.baseAddress!).assumingMemoryBound(to: CChar.self)
                var at = 0
                for i in 0..<args.count {
                    ptrs[i] = base + at
                    at += lens[i]
                }
                return body(Int32(args.count), ptrs.baseAddress!, lens.baseAddress!)
            }
        }
    }
}

private let emptyArgument: [CChar] = [0]

private func pin<R>(_ args: [[UInt8]], _ i: Int, _ ptrs: UnsafeMutableBufferPointer<UnsafePointer<CChar>?>,
                    _ lens: UnsafeMutableBufferPointer<Int>,
                    _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafeMutablePointer<Int>) -> R) -> R {
    if i == args.count { return body(Int32(args.count), ptrs.baseAddress!, lens.baseAddress!) }
    return args[i].withUnsafeBufferPointer { b in
        lens[i] = b.count
        return emptyArgument.withUnsafeBufferPointer { empty in
            ptrs[i] = b.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) } ?? empty.baseAddress
            return pin(args, i + 1, ptrs, lens, body)
        }
    }
}

/// A command's arguments as bytes.
@inline(__always)
func cmd(_ parts: [UInt8]...) -> [[UInt8]] { parts }

extension String {
    @inline(__always) var bytes: [UInt8] { Array(utf8) }
}
