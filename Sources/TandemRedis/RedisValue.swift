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

/// Formats one command in the Redis protocol (hiredis's formatter) and hands the bytes to `body`
/// before they are freed. False when hiredis could not format it.
func withFormattedCommand(_ args: [[UInt8]], _ body: (UnsafeRawBufferPointer) throws -> Void) rethrows -> Bool {
    var target: UnsafeMutablePointer<CChar>?
    let len = withRedisArgv(args) { argc, argv, lens in redisFormatCommandArgv(&target, argc, argv, lens) }
    guard len > 0, let target else { return false }
    defer { redisFreeCommand(target) }
    try body(UnsafeRawBufferPointer(start: target, count: Int(len)))
    return true
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
