import CHiredis
import TandemCache

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

    /// Hands each complete reply to `handle` until the bytes run out or `handle` returns false (its
    /// owner closed or replaced this reader); false on a protocol error.
    func forEachReply(_ handle: (RedisValue) -> Bool) -> Bool {
        while true {
            switch next() {
            case .reply(let value): if !handle(value) { return true }
            case .incomplete: return true
            case .protocolError: return false
            }
        }
    }

    enum Next {
        case reply(RedisValue)
        case incomplete
        case protocolError
    }
}
