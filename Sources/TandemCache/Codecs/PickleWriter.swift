import Foundation

/// Writes ``PythonValue``s as pickle protocol 5, the way Python's own pickler lays them out (one
/// frame, strings, bytes and containers memoized), so that `pickle.loads` on the other side reads
/// them as the same Python values.
struct PickleWriter {
    /// The deepest nesting written (a deeper value is refused rather than overflowing the stack).
    static let maxDepth = 500

    static func write(_ value: PythonValue) throws -> [UInt8] {
        var w = PickleWriter()
        // PROTO 5, then room for a FRAME header whose length is filled in at the end.
        w.body.reserveCapacity(256)
        w.body.append(contentsOf: [0x80, 5, 0x95, 0, 0, 0, 0, 0, 0, 0, 0])
        try w.put(value, depth: 0)
        w.body.append(0x2E)  // STOP
        let payload = w.body.count - headerLength
        // Python frames a pickle whose payload is at least 4 bytes.
        guard payload >= 4 else {
            w.body.removeSubrange(2..<headerLength)
            return w.body
        }
        var n = UInt64(payload)
        for i in 3..<headerLength {
            w.body[i] = UInt8(truncatingIfNeeded: n)
            n >>= 8
        }
        return w.body
    }

    /// PROTO 5 and a FRAME header.
    private static let headerLength = 11
    private var body: [UInt8] = []
    private static let batch = 1000

    private mutating func memoize() { body.append(0x94) }

    private mutating func le<T: FixedWidthInteger>(_ v: T) {
        var x = v.littleEndian
        withUnsafeBytes(of: &x) { body.append(contentsOf: $0) }
    }

    private mutating func put(_ value: PythonValue, depth: Int) throws {
        guard depth < Self.maxDepth else { throw PickleError("the value is nested deeper than \(Self.maxDepth) levels") }
        switch value {
        case .none: body.append(0x4E)
        case .bool(let b): body.append(b ? 0x88 : 0x89)
        case .int(let i): int(i)
        case .float(let d):
            body.append(0x47)
            var bits = d.bitPattern.bigEndian
            withUnsafeBytes(of: &bits) { body.append(contentsOf: $0) }
        case .string(let s): string(s)
        case .bytes(let b):
            if b.count < 256 {
                body.append(0x43)
                body.append(UInt8(b.count))
            } else if b.count <= Int(UInt32.max) {
                body.append(0x42)
                le(UInt32(b.count))
            } else {
                body.append(0x8E)
                le(UInt64(b.count))
            }
            body.append(contentsOf: b)
            memoize()
        case .list(let items):
            body.append(0x5D)
            memoize()
            try batches(items, depth: depth, single: 0x61, many: 0x65)
        case .tuple(let items):
            if items.isEmpty { return body.append(0x29) }
            if items.count > 3 { body.append(0x28) }
            for item in items { try put(item, depth: depth + 1) }
            body.append(items.count > 3 ? 0x74 : [0x85, 0x86, 0x87][items.count - 1])
            memoize()
        case .dict(let items):
            body.append(0x7D)
            memoize()
            var start = 0
            while start < items.count {
                let chunk = items[start..<min(start + Self.batch, items.count)]
                if chunk.count > 1 { body.append(0x28) }
                for item in chunk {
                    try put(item.key, depth: depth + 1)
                    try put(item.value, depth: depth + 1)
                }
                body.append(chunk.count > 1 ? 0x75 : 0x73)
                start += Self.batch
            }
        case .set(let items):
            body.append(0x8F)
            memoize()
            var start = 0
            while start < items.count {
                body.append(0x28)
                for item in items[start..<min(start + Self.batch, items.count)] { try put(item, depth: depth + 1) }
                body.append(0x90)
                start += Self.batch
            }
        case .datetime(let dt):
            guard dt.date != nil else { throw PickleError("a datetime with a field out of range: \(dt)") }
            global("datetime", "datetime")
            let us = dt.microsecond
            let state: [UInt8] = [UInt8(dt.year >> 8), UInt8(dt.year & 0xFF), UInt8(dt.month), UInt8(dt.day), UInt8(dt.hour),
                                  UInt8(dt.minute), UInt8(dt.second), UInt8(us >> 16), UInt8(us >> 8 & 0xFF), UInt8(us & 0xFF)]
            body += [0x43, 10] + state
            memoize()
            if let offset = dt.utcOffsetSeconds {
                guard abs(offset) < 86_400 else { throw PickleError("a time zone offset of \(offset) s (Python allows less than a day)") }
                global("datetime", "timezone")
                global("datetime", "timedelta")
                let days = offset < 0 ? -1 : 0
                int(days)
                int(offset - days * 86_400)
                int(0)
                body.append(0x87)  // TUPLE3
                memoize()
                body.append(0x52)  // REDUCE: the timedelta
                memoize()
                body.append(0x85)  // TUPLE1
                memoize()
                body.append(0x52)  // REDUCE: the timezone
                memoize()
                body.append(0x86)  // TUPLE2
            } else {
                body.append(0x85)
            }
            memoize()
            body.append(0x52)
            memoize()
        case .decimal(let text):
            global("decimal", "Decimal")
            string(text)
            body.append(0x85)
            memoize()
            body.append(0x52)
            memoize()
        case .uuid(let u):
            global("uuid", "UUID")
            body += [0x29, 0x81]  // EMPTY_TUPLE, NEWOBJ
            memoize()
            body.append(0x7D)
            memoize()
            string("int")
            // The UUID's 128-bit number as Python writes an int: the short opcodes when it fits in 64
            // bits, else LONG1 (little-endian, with a zero byte when the top bit is set).
            var bytes = withUnsafeBytes(of: u.uuid) { Array($0) }.reversed() as [UInt8]
            if bytes[8...].allSatisfy({ $0 == 0 }), bytes[7] & 0x80 == 0 {
                int(Int(Int64(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(as: Int64.self) })))
            } else {
                while bytes.count > 1, bytes.last == 0, (bytes[bytes.count - 2] & 0x80) == 0 { bytes.removeLast() }
                if bytes.last.map({ $0 & 0x80 != 0 }) ?? false { bytes.append(0) }
                body += [0x8A, UInt8(bytes.count)] + bytes
            }
            body += [0x73, 0x62]  // SETITEM, BUILD
        }
    }

    private mutating func batches(_ items: [PythonValue], depth: Int, single: UInt8, many: UInt8) throws {
        var start = 0
        while start < items.count {
            let chunk = items[start..<min(start + Self.batch, items.count)]
            if chunk.count > 1 { body.append(0x28) }
            for item in chunk { try put(item, depth: depth + 1) }
            body.append(chunk.count > 1 ? many : single)
            start += Self.batch
        }
    }

    private mutating func int(_ i: Int) {
        switch i {
        case 0...0xFF:
            body.append(0x4B)
            body.append(UInt8(i))
        case 0...0xFFFF:
            body.append(0x4D)
            le(UInt16(i))
        case Int(Int32.min)...Int(Int32.max):
            body.append(0x4A)
            le(Int32(i))
        default:
            // LONG1: the shortest little-endian two's complement.
            var bytes = withUnsafeBytes(of: Int64(i).littleEndian, Array.init)
            while bytes.count > 1 {
                let last = bytes[bytes.count - 1], next = bytes[bytes.count - 2]
                guard (last == 0 && next & 0x80 == 0) || (last == 0xFF && next & 0x80 != 0) else { break }
                bytes.removeLast()
            }
            body += [0x8A, UInt8(bytes.count)] + bytes
        }
    }

    private mutating func string(_ s: String) {
        var s = s
        let count = s.utf8.count
        if count < 256 {
            body.append(0x8C)
            body.append(UInt8(count))
        } else if count <= Int(UInt32.max) {
            body.append(0x58)
            le(UInt32(count))
        } else {
            body.append(0x8D)
            le(UInt64(count))
        }
        // One copy of a native string's bytes; a bridged one is made native first.
        s.withUTF8 { body.append(contentsOf: $0) }
        memoize()
    }

    private mutating func global(_ module: String, _ name: String) {
        string(module)
        string(name)
        body.append(0x93)
        memoize()
    }
}
