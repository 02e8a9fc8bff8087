@testable import TandemRedis
import Testing

/// The command encoder, without a server: exact bytes, and arguments that would break a text protocol
/// stay single arguments (read back with hiredis's reader, which parses the same framing).
struct RESPTests {
    @Test func commandBytesAreExact() {
        let bytes = RESP.command(["SET".bytes, "k".bytes, [UInt8](repeating: 0x61, count: 12), []])
        #expect(String(decoding: bytes, as: UTF8.self) == "*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$12\r\naaaaaaaaaaaa\r\n$0\r\n\r\n")
    }

    @Test func hostileArgumentsStayOneArgumentEach() throws {
        let args: [[UInt8]] = ["GET".bytes, "a b\r\nFLUSHALL\r\n".bytes, [0, 13, 10, 36, 42], [UInt8](repeating: 7, count: 100_000)]
        var out: [UInt8] = "leading".bytes
        RESP.append(args, to: &out)
        #expect(Array(out.prefix(7)) == "leading".bytes)
        let reader = try #require(RedisReplyReader())
        let ok = out.dropFirst(7).withUnsafeBytes { reader.feed($0) }
        #expect(ok)
        guard case .reply(let value) = reader.next() else {
            Issue.record("the encoded command did not parse as one array")
            return
        }
        #expect(value == .array(args.map { .bulk($0) }))
        guard case .incomplete = reader.next() else {
            Issue.record("bytes were left after the one command")
            return
        }
    }
}
