@_spi(Backend) import TandemCache

/// One reply of memcached's meta protocol (`mg`, `ms`, `md`, `ma`, `mn`), or of the few classic
/// commands the async face sends (`flush_all`).
struct MetaReply: Sendable, Equatable {
    enum Code: Sendable, Equatable {
        /// `VA <size> <flags>*`: a value follows.
        case value
        /// `HD`: success without a value.
        case stored
        /// `EN`: a get missed.
        case miss
        /// `NF`: not found (delete, arithmetic).
        case notFound
        /// `NS`: not stored (an add of an existing key).
        case notStored
        /// `EX`: the item exists (a compare-and-swap mismatch).
        case exists
        /// `MN`: the end of a pipelined batch.
        case noop
        /// `OK` (a classic command such as `flush_all`).
        case ok
        /// `ERROR`, `CLIENT_ERROR <message>` or `SERVER_ERROR <message>`.
        case error(kind: String, message: String)
    }

    var code: Code
    /// The item's client flags (`f` flag): Tandem's type tag.
    var clientFlags: UInt32 = 0
    /// The opaque token echoed back (`O` flag): which request of a quiet batch this reply answers.
    var opaque: Int?
    /// The value of a `VA` reply.
    var value: [UInt8] = []
    /// The item's CAS (`c` flag), when asked for.
    var cas: UInt64?
}

/// Why the bytes from a server are not the meta protocol.
struct MetaProtocolError: Error, Equatable {
    let reason: String
}

/// Splits the byte stream of one connection into ``MetaReply`` values. Loop thread only (one per
/// connection, reset on reconnect).
struct MetaDecoder {
    private var buffer: [UInt8] = []
    private var start = 0
    /// The longest header line accepted (the longest legitimate one is well under 300 bytes).
    static let maxLine = 8192

    mutating func feed(_ bytes: UnsafeRawBufferPointer) {
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 20)
            start = 0
        } else if start > 65536 && start * 2 > buffer.count {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    mutating func reset() {
        buffer = []
        start = 0
    }

    /// The next whole reply, or nil when more bytes are needed.
    mutating func next() throws(MetaProtocolError) -> MetaReply? {
        guard let lineEnd = findCRLF(from: start) else {
            if buffer.count - start > MetaDecoder.maxLine { throw MetaProtocolError(reason: "a reply line longer than \(MetaDecoder.maxLine) bytes") }
            return nil
        }
        // The reply word: the bytes up to the first space (or the line's end).
        var wordEnd = start
        while wordEnd < lineEnd, buffer[wordEnd] != 32 { wordEnd += 1 }
        let length = wordEnd - start
        let b0 = length > 0 ? buffer[start] : 0
        let b1 = length > 1 ? buffer[start + 1] : 0
        var reply: MetaReply
        var consumed = lineEnd + 2
        if length == 2 {
            switch (b0, b1) {
            case (86, 65):  // VA <size> <flags>*
                var i = wordEnd
                while i < lineEnd, buffer[i] == 32 { i += 1 }
                var size = 0
                let digitsStart = i
                while i < lineEnd, buffer[i] >= 48, buffer[i] <= 57, size < 1 << 40 {
                    size = size * 10 + Int(buffer[i] - 48)
                    i += 1
                }
                guard i > digitsStart, i == lineEnd || buffer[i] == 32 else { throw MetaProtocolError(reason: "a VA reply without a size") }
                let dataStart = lineEnd + 2
                guard buffer.count >= dataStart + size + 2 else { return nil }
                guard buffer[dataStart + size] == 13, buffer[dataStart + size + 1] == 10 else {
                    throw MetaProtocolError(reason: "a value not followed by CRLF")
                }
                reply = MetaReply(code: .value, value: Array(buffer[dataStart..<(dataStart + size)]))
                consumed = dataStart + size + 2
                try parseFlags(from: i, to: lineEnd, into: &reply)
            case (72, 68): reply = MetaReply(code: .stored)     // HD
            case (69, 78): reply = MetaReply(code: .miss)       // EN
            case (78, 70): reply = MetaReply(code: .notFound)   // NF
            case (78, 83): reply = MetaReply(code: .notStored)  // NS
            case (69, 88): reply = MetaReply(code: .exists)     // EX
            case (77, 78): reply = MetaReply(code: .noop)       // MN
            case (79, 75): reply = MetaReply(code: .ok)         // OK
            default: throw unknown(lineEnd)
            }
            if reply.code != .value && reply.code != .ok { try parseFlags(from: wordEnd, to: lineEnd, into: &reply) }
        } else {
            let word = String(decoding: buffer[start..<wordEnd], as: UTF8.self)
            guard word == "ERROR" || word == "CLIENT_ERROR" || word == "SERVER_ERROR" else { throw unknown(lineEnd) }
            let rest = buffer[wordEnd..<lineEnd].drop { $0 == 32 }
            reply = MetaReply(code: .error(kind: word, message: String(decoding: rest, as: UTF8.self)))
        }
        start = consumed
        return reply
    }

    private func unknown(_ lineEnd: Int) -> MetaProtocolError {
        MetaProtocolError(reason: "an unknown reply \(String(decoding: buffer[start..<min(lineEnd, start + 40)], as: UTF8.self).debugDescription)")
    }

    /// Reads the flags Tandem asks for (`f` client flags, `O` opaque, `c` CAS) from the tokens in `from..<to`;
    /// others are ignored.
    private func parseFlags(from: Int, to end: Int, into reply: inout MetaReply) throws(MetaProtocolError) {
        var i = from
        while i < end {
            while i < end, buffer[i] == 32 { i += 1 }
            guard i < end else { break }
            let flag = buffer[i]
            i += 1
            var value: UInt64 = 0
            var digits = 0
            var other = false
            while i < end, buffer[i] != 32 {
                let c = buffer[i]
                if c >= 48, c <= 57, value < UInt64(1) << 56 { value = value * 10 + UInt64(c - 48); digits += 1 } else { other = true }
                i += 1
            }
            switch flag {
            case 102:  // f
                guard digits > 0, !other, value <= UInt64(UInt32.max) else { throw MetaProtocolError(reason: "client flags that are not a 32-bit number") }
                reply.clientFlags = UInt32(value)
            case 79:  // O
                reply.opaque = digits > 0 && !other ? Int(value) : nil
            case 99:  // c
                reply.cas = digits > 0 && !other ? value : nil
            default:
                break
            }
        }
    }

    private func findCRLF(from: Int) -> Int? {
        var i = from
        let end = min(buffer.count - 1, from + MetaDecoder.maxLine + 1)
        while i < end {
            if buffer[i] == 13 && buffer[i + 1] == 10 { return i }
            i += 1
        }
        return nil
    }
}

/// Builds meta-protocol requests. Keys reach here validated by the cache front (no spaces, no
/// control characters, at most 250 bytes), and ``MemcachedLoopClient`` checks again with the same rule.
enum MetaRequest {
    /// The TTL token memcached expects (`.never` is 0; see ``MemcachedOps/expiration(_:)``).
    static func ttl(_ expiry: CacheExpiry) -> String { String(MemcachedOps.expiration(expiry)) }

    static func line(_ out: inout [UInt8], _ parts: String...) {
        for (i, p) in parts.enumerated() {
            if i > 0 { out.append(32) }
            out.append(contentsOf: p.utf8)
        }
        out.append(13)
        out.append(10)
    }

    /// `mg <key> v f`: a get with the value and its client flags.
    static func get(_ key: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(key.utf8.count + 10)
        out.append(contentsOf: "mg ".utf8)
        out.append(contentsOf: key.utf8)
        out.append(contentsOf: " v f\r\n".utf8)
        return out
    }

    /// `ms <key> <size> <flags>` then the data.
    static func set(_ out: inout [UInt8], key: String, value: StoredValue, expiry: CacheExpiry, add: Bool, extra: String? = nil) {
        var flags = "F\(value.kind.rawValue) T\(ttl(expiry)) M\(add ? "E" : "S")"
        if let extra { flags += " " + extra }
        line(&out, "ms", key, String(value.bytes.count), flags)
        out.append(contentsOf: value.bytes)
        out.append(13)
        out.append(10)
    }
}
