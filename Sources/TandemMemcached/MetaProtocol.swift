import TandemCache

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
        let line = buffer[start..<lineEnd]
        let tokens = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: true)
        guard let head = tokens.first else { throw MetaProtocolError(reason: "an empty reply line") }
        let word = String(decoding: head, as: UTF8.self)
        var reply: MetaReply
        var consumed = lineEnd + 2
        switch word {
        case "VA":
            guard tokens.count >= 2, let size = Int(String(decoding: tokens[1], as: UTF8.self)), size >= 0 else {
                throw MetaProtocolError(reason: "a VA reply without a size")
            }
            let dataStart = lineEnd + 2
            guard buffer.count >= dataStart + size + 2 else { return nil }
            guard buffer[dataStart + size] == 13, buffer[dataStart + size + 1] == 10 else {
                throw MetaProtocolError(reason: "a value not followed by CRLF")
            }
            reply = MetaReply(code: .value, value: Array(buffer[dataStart..<(dataStart + size)]))
            consumed = dataStart + size + 2
            try parseFlags(tokens.dropFirst(2), into: &reply)
        case "HD", "EN", "NF", "NS", "EX", "MN":
            let codes: [String: MetaReply.Code] = ["HD": .stored, "EN": .miss, "NF": .notFound, "NS": .notStored, "EX": .exists, "MN": .noop]
            reply = MetaReply(code: codes[word] ?? .noop)
            try parseFlags(tokens.dropFirst(), into: &reply)
        case "OK":
            reply = MetaReply(code: .ok)
        case "ERROR", "CLIENT_ERROR", "SERVER_ERROR":
            let rest = line.dropFirst(word.utf8.count).drop { $0 == UInt8(ascii: " ") }
            reply = MetaReply(code: .error(kind: word, message: String(decoding: rest, as: UTF8.self)))
        default:
            throw MetaProtocolError(reason: "an unknown reply \(String(decoding: line.prefix(40), as: UTF8.self).debugDescription)")
        }
        start = consumed
        return reply
    }

    private func parseFlags(_ tokens: ArraySlice<ArraySlice<UInt8>>, into reply: inout MetaReply) throws(MetaProtocolError) {
        for t in tokens {
            guard let flag = t.first else { continue }
            let arg = String(decoding: t.dropFirst(), as: UTF8.self)
            switch flag {
            case UInt8(ascii: "f"):
                guard let f = UInt32(arg) else { throw MetaProtocolError(reason: "client flags \(arg.debugDescription)") }
                reply.clientFlags = f
            case UInt8(ascii: "O"):
                reply.opaque = Int(arg)
            default:
                break  // flags Tandem did not ask for are ignored
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
/// control characters, at most 250 bytes); ``MetaRequest/isSafeKey(_:)`` checks again before a byte
/// is written.
enum MetaRequest {
    /// True when `key` can be sent as a meta-protocol token: 1-250 bytes, no space or control byte.
    static func isSafeKey(_ key: String) -> Bool {
        let u = key.utf8
        return !u.isEmpty && u.count <= 250 && u.allSatisfy { $0 > 32 && $0 != 127 }
    }

    /// The TTL token memcached expects (`.never` is 0; see ``MemcachedOps/expiration(_:)``).
    static func ttl(_ expiry: CacheExpiry) -> String { String(MemcachedOps.expiration(expiry)) }

    static func line(_ out: inout [UInt8], _ parts: String...) {
        out.append(contentsOf: parts.joined(separator: " ").utf8)
        out.append(13)
        out.append(10)
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
