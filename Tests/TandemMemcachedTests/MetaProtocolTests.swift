@testable import TandemMemcached
import TandemCache
import Testing

/// The meta-protocol reply decoder, without a server.
struct MetaProtocolTests {
    private func decode(_ chunks: [[UInt8]]) throws -> [MetaReply] {
        var d = MetaDecoder()
        var out: [MetaReply] = []
        for c in chunks {
            c.withUnsafeBytes { d.feed($0) }
            while let r = try d.next() { out.append(r) }
        }
        return out
    }

    private let stream: [UInt8] = Array("VA 7 f12 O3\r\n".utf8) + [0, 13, 10, 255, 32, 13, 10] + Array("\r\nEN\r\nHD\r\nNS\r\nNF\r\nMN\r\nOK\r\nSERVER_ERROR object too large for cache\r\nCLIENT_ERROR bad command line format\r\nERROR\r\nVA 2\r\n42\r\n".utf8)

    private var expected: [MetaReply] {
        [
            MetaReply(code: .value, clientFlags: 12, opaque: 3, value: [0, 13, 10, 255, 32, 13, 10]),
            MetaReply(code: .miss), MetaReply(code: .stored), MetaReply(code: .notStored), MetaReply(code: .notFound),
            MetaReply(code: .noop), MetaReply(code: .ok),
            MetaReply(code: .error(kind: "SERVER_ERROR", message: "object too large for cache")),
            MetaReply(code: .error(kind: "CLIENT_ERROR", message: "bad command line format")),
            MetaReply(code: .error(kind: "ERROR", message: "")),
            MetaReply(code: .value, value: Array("42".utf8)),
        ]
    }

    @Test func wholeRepliesInOneReadDecodeInOrder() throws {
        #expect(try decode([stream]) == expected)
    }

    @Test func repliesSplitAtEveryByteDecodeTheSame() throws {
        #expect(try decode(stream.map { [$0] }) == expected, "one byte per read")
        for cut in 1..<stream.count {
            #expect(try decode([Array(stream[..<cut]), Array(stream[cut...])]) == expected, "split at \(cut)")
        }
    }

    @Test func aValueWaitsForItsLastByte() throws {
        var d = MetaDecoder()
        let partial = Array("VA 5 f0\r\nabc".utf8)
        partial.withUnsafeBytes { d.feed($0) }
        #expect(try d.next() == nil, "a half-written value is not a reply yet")
        Array("de\r\n".utf8).withUnsafeBytes { d.feed($0) }
        #expect(try d.next() == MetaReply(code: .value, value: Array("abcde".utf8)))
    }

    @Test func bytesThatAreNotTheMetaProtocolAreAnError() {
        for bad in ["HTTP/1.1 200 OK\r\n", "VA x\r\n", "VA 3\r\nabcXY", "VA 1 fNaN\r\nx\r\n", "\r\n"] {
            #expect(throws: MetaProtocolError.self, "\(bad.debugDescription)") { _ = try decode([Array(bad.utf8)]) }
        }
        let endless = [UInt8](repeating: UInt8(ascii: "a"), count: MetaDecoder.maxLine + 10)
        #expect(throws: MetaProtocolError.self, "a line without an end") { _ = try decode([endless]) }
    }

    @Test func onlySafeKeysMayBeSent() {
        #expect(memcachedKeyProblem("a:1:key-ü") == nil)
        for bad in ["", "a b", "a\r\nmg x", "tab\there", "del\u{7f}", String(repeating: "k", count: 251)] {
            #expect(memcachedKeyProblem(bad) != nil, "\(bad.debugDescription)")
        }
    }

    @Test func aCounterPastInt64IsUndoneByTheOppositeDeltaAndRefused() {
        #expect(MemcachedCounter.outcome(42, delta: 1) == .value(42))
        #expect(MemcachedCounter.outcome(UInt64(Int64.max), delta: 3) == .value(Int64.max))
        #expect(MemcachedCounter.outcome(UInt64(Int64.max) + 1, delta: 3) == .overflowed(undo: -3))
        // A decrement that lands past Int64.max (the value was already there) changed nothing upward: no undo.
        #expect(MemcachedCounter.outcome(UInt64.max - 1, delta: -1) == .overflowed(undo: nil))
    }
}
