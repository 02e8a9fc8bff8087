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

/// A command's arguments as bytes.
@inline(__always)
func cmd(_ parts: [UInt8]...) -> [[UInt8]] { parts }

extension String {
    @inline(__always) var bytes: [UInt8] { Array(utf8) }
}

/// Commands in Redis's protocol (RESP): an array of bulk strings, each with its length, so an
/// argument with CR, LF, space or NUL is one argument and can never become a second command. Written
/// straight into the buffer that goes to the socket (hiredis formatted each command into a buffer of
/// its own with `sprintf`, then Tandem copied it).
enum RESP {
    /// Appends one command to `out`.
    static func append(_ args: [[UInt8]], to out: inout [UInt8]) {
        header(UInt8(ascii: "*"), args.count, &out)
        for a in args {
            header(UInt8(ascii: "$"), a.count, &out)
            out.append(contentsOf: a)
            out.append(13)
            out.append(10)
        }
    }

    /// One command's bytes.
    static func command(_ args: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(args.reduce(16) { $0 + $1.count + 16 })
        append(args, to: &out)
        return out
    }

    /// `*<count>\r\n` or `$<length>\r\n`.
    private static func header(_ kind: UInt8, _ n: Int, _ out: inout [UInt8]) {
        out.append(kind)
        let first = out.count
        var v = n
        repeat {
            out.append(UInt8(ascii: "0") + UInt8(v % 10))
            v /= 10
        } while v > 0
        out[first...].reverse()
        out.append(13)
        out.append(10)
    }
}

/// hiredis's reply reader over the bytes of one connection: fed what arrives, asked for the replies
/// complete so far. Its one owner is the connection that holds it; `deinit` is the one place that
/// frees the hiredis reader.
final class RedisReplyReader {
    private let reader: UnsafeMutablePointer<redisReader>

    /// Nil when hiredis cannot allocate a reader.
    init?() {
        guard let r = redisReaderCreate() else { return nil }
        reader = r
    }

    deinit { redisReaderFree(reader) }

    /// Adds bytes that arrived; false on a protocol error (the connection is out of step).
    func feed(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return true }
        return redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), bytes.count) == chiredis_ok
    }

    /// The next complete reply, `.incomplete` until more bytes arrive, or `.protocolError`.
    func next() -> Next {
        var reply: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &reply) == chiredis_ok else { return .protocolError }
        guard let r = reply else { return .incomplete }
        defer { freeReplyObject(r) }
        return .reply(RedisValue(reply: r))
    }

    enum Next {
        case reply(RedisValue)
        case incomplete
        case protocolError
    }
}
