import Foundation

/// Why a pickle was not read (or a value could not be written as one): what was wrong, in words.
public struct PickleError: Error, CustomStringConvertible, Sendable, Hashable {
    /// What was wrong.
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Reads Python pickles (protocols 0 to 5) into ``PythonValue``s, treating the input as hostile.
///
/// Only data is read: the opcodes that build numbers, text, bytes and containers, and a short list of
/// known globals (`set`, `frozenset`, `bytearray`, `bytes`, `_codecs.encode`, `datetime.datetime`,
/// `datetime.timezone`, `datetime.timedelta`, `decimal.Decimal`, `uuid.UUID`, `uuid.SafeUUID`,
/// `collections.OrderedDict`), each applied by Tandem's own code, never called. A pickle that names any
/// other global, uses persistent ids, extension codes or out-of-band buffers, is truncated, or breaks
/// the format is refused with a ``PickleError`` that says what was wrong. Lengths are checked against
/// the input before anything is allocated, nesting is bounded (which also refuses a container that
/// holds itself) and so is the number of values a pickle may expand to through shared references.
struct PickleReader {
    /// The deepest nesting read.
    static let maxDepth = 200
    /// The most values one pickle may expand to (shared references count each time they appear).
    static let maxValues = 1 << 20

    /// Reads the pickle in `bytes`.
    static func read(_ bytes: [UInt8]) throws -> PythonValue {
        try bytes.withUnsafeBufferPointer { buffer in
            var reader = PickleReader(buffer)
            let item = try reader.run()
            var budget = maxValues
            return try item.materialize(depth: 0, budget: &budget)
        }
    }

    /// The pickle (valid while `read` runs).
    private let bytes: UnsafeBufferPointer<UInt8>
    private var pos = 0
    private var stack: [Item] = []
    /// Where each open MARK began, as a stack length.
    private var marks: [Int] = []
    /// The memo: entries 0, 1, 2... as MEMOIZE (and most PUTs) write them, and any other index apart.
    private var memo: [Item] = []
    private var memoApart: [Int: Item] = [:]

    private init(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
        stack.reserveCapacity(16)
        memo.reserveCapacity(16)
    }

    // MARK: input

    private mutating func take(_ n: Int) throws -> Slice<UnsafeBufferPointer<UInt8>> {
        guard n >= 0, n <= bytes.count - pos else {
            throw PickleError("the pickle is truncated: \(n) bytes announced at offset \(pos), \(bytes.count - pos) left")
        }
        defer { pos += n }
        return bytes[pos..<(pos + n)]
    }

    @inline(__always)
    private mutating func byte() throws -> UInt8 {
        guard pos < bytes.count else { throw PickleError("the pickle is truncated at offset \(pos)") }
        defer { pos += 1 }
        return bytes[pos]
    }

    /// A little-endian unsigned integer of `n` bytes (n ≤ 8), as an Int when it fits.
    private mutating func unsigned(_ n: Int) throws -> Int {
        guard n <= bytes.count - pos else { throw PickleError("the pickle is truncated at offset \(pos)") }
        var v: UInt64 = 0
        for i in 0..<n { v |= UInt64(bytes[pos + i]) << (8 * UInt64(i)) }
        pos += n
        guard v <= UInt64(Int.max) else { throw PickleError("a length of \(v) bytes") }
        return Int(v)
    }

    /// A length field of `n` bytes, checked against what is left.
    private mutating func length(_ n: Int) throws -> Int {
        let l = try unsigned(n)
        guard l <= bytes.count - pos else {
            throw PickleError("the pickle is truncated: \(l) bytes announced at offset \(pos), \(bytes.count - pos) left")
        }
        return l
    }

    /// The text up to the next newline (protocol 0's opcodes), without it.
    private mutating func line() throws -> ArraySlice<UInt8> {
        guard let end = bytes[pos...].firstIndex(of: 0x0A) else { throw PickleError("the pickle is truncated: a line has no end") }
        defer { pos = end + 1 }
        return ArraySlice(bytes[pos..<end])
    }

    private mutating func lineText() throws -> String {
        let l = try line()
        guard let s = String(validating: l, as: UTF8.self) else { throw PickleError("a text argument is not UTF-8") }
        return s
    }

    // MARK: the stack

    private var base: Int { marks.last ?? 0 }

    private mutating func pop() throws -> Item {
        guard stack.count > base else { throw PickleError("an opcode at offset \(pos - 1) found the stack empty") }
        return stack.removeLast()
    }

    private func top() throws -> Item {
        guard stack.count > base, let last = stack.last else { throw PickleError("an opcode at offset \(pos - 1) found the stack empty") }
        return last
    }

    private mutating func popMark() throws -> [Item] {
        guard let start = marks.popLast() else { throw PickleError("an opcode at offset \(pos - 1) needs a MARK and there is none") }
        let items = Array(stack[start...])
        stack.removeSubrange(start...)
        return items
    }

    private mutating func push(_ v: PythonValue) { stack.append(.value(v)) }

    // MARK: the opcodes

    private mutating func run() throws -> Item {
        while true {
            let opcode = try byte()
            switch opcode {
            case 0x80:  // PROTO
                let p = try byte()
                guard p <= 5 else { throw PickleError("pickle protocol \(p) is newer than 5") }
            case 0x95: _ = try length(8)  // FRAME: the frame's bytes follow
            case 0x2E:  // STOP
                return try pop()
            case 0x28: marks.append(stack.count)  // MARK
            case 0x30: _ = try pop()  // POP
            case 0x31: _ = try popMark()  // POP_MARK
            case 0x32: stack.append(try top())  // DUP

            // Constants and numbers.
            case 0x4E: push(.none)
            case 0x88: push(.bool(true))
            case 0x89: push(.bool(false))
            case 0x4B: push(.int(Int(try byte())))  // BININT1
            case 0x4D: push(.int(try unsigned(2)))  // BININT2
            case 0x4A:  // BININT
                push(.int(Int(Int32(bitPattern: UInt32(try unsigned(4))))))
            case 0x8A: stack.append(try Self.long(Array(try take(try length(1)))))  // LONG1
            case 0x8B: stack.append(try Self.long(Array(try take(try length(4)))))  // LONG4
            case 0x49:  // INT
                let text = try lineText()
                switch text {
                case "01": push(.bool(true))
                case "00": push(.bool(false))
                default: push(.int(try Self.decimalInt(text)))
                }
            case 0x4C:  // LONG
                var text = try lineText()
                if text.hasSuffix("L") { text.removeLast() }
                push(.int(try Self.decimalInt(text)))
            case 0x47:  // BINFLOAT
                var bits: UInt64 = 0
                for b in try take(8) { bits = bits << 8 | UInt64(b) }
                push(.float(Double(bitPattern: bits)))
            case 0x46:  // FLOAT
                let text = try lineText()
                guard let d = Double(text) else { throw PickleError("FLOAT's argument \"\(text.prefix(40))\" is not a number") }
                push(.float(d))

            // Text.
            case 0x8C: push(.string(try utf8(try take(try length(1)))))  // SHORT_BINUNICODE
            case 0x58: push(.string(try utf8(try take(try length(4)))))  // BINUNICODE
            case 0x8D: push(.string(try utf8(try take(try length(8)))))  // BINUNICODE8
            case 0x56: push(.string(try Self.rawUnicodeEscape(try line())))  // UNICODE
            case 0x55: push(.string(try Self.ascii(try take(try length(1)))))  // SHORT_BINSTRING
            case 0x54:  // BINSTRING (a signed length)
                let n = Int32(bitPattern: UInt32(try unsigned(4)))
                guard n >= 0 else { throw PickleError("BINSTRING's length is negative") }
                push(.string(try Self.ascii(try take(Int(n)))))
            case 0x53: push(.string(try Self.ascii(try Self.quoted(try line()))))  // STRING

            // Bytes.
            case 0x43: push(.bytes(Array(try take(try length(1)))))  // SHORT_BINBYTES
            case 0x42: push(.bytes(Array(try take(try length(4)))))  // BINBYTES
            case 0x8E: push(.bytes(Array(try take(try length(8)))))  // BINBYTES8
            case 0x96: push(.bytes(Array(try take(try length(8)))))  // BYTEARRAY8

            // Containers.
            case 0x5D: stack.append(.list(ListBox()))  // EMPTY_LIST
            case 0x29: stack.append(.tuple([]))  // EMPTY_TUPLE
            case 0x7D: stack.append(.dict(DictBox()))  // EMPTY_DICT
            case 0x8F: stack.append(.set(SetBox()))  // EMPTY_SET
            case 0x6C: stack.append(.list(ListBox(try popMark())))  // LIST
            case 0x74: stack.append(.tuple(try popMark()))  // TUPLE
            case 0x85: stack.append(.tuple([try pop()]))  // TUPLE1
            case 0x86:  // TUPLE2
                let b = try pop(), a = try pop()
                stack.append(.tuple([a, b]))
            case 0x87:  // TUPLE3
                let c = try pop(), b = try pop(), a = try pop()
                stack.append(.tuple([a, b, c]))
            case 0x64:  // DICT
                let dict = DictBox()
                try dict.add(try popMark())
                stack.append(.dict(dict))
            case 0x91: stack.append(.set(SetBox(try popMark())))  // FROZENSET
            case 0x61:  // APPEND
                let item = try pop()
                guard case .list(let list) = try top() else { throw PickleError("APPEND to something that is not a list") }
                list.items.append(item)
            case 0x65:  // APPENDS
                let items = try popMark()
                guard case .list(let list) = try top() else { throw PickleError("APPENDS to something that is not a list") }
                list.items += items
            case 0x73:  // SETITEM
                let value = try pop(), key = try pop()
                guard case .dict(let dict) = try top() else { throw PickleError("SETITEM on something that is not a dict") }
                try dict.add([key, value])
            case 0x75:  // SETITEMS
                let items = try popMark()
                guard case .dict(let dict) = try top() else { throw PickleError("SETITEMS on something that is not a dict") }
                try dict.add(items)
            case 0x90:  // ADDITEMS
                let items = try popMark()
                guard case .set(let set) = try top() else { throw PickleError("ADDITEMS on something that is not a set") }
                set.items += items

            // The memo.
            case 0x94: try remember(memo.count + memoApart.count)  // MEMOIZE
            case 0x70: try remember(try Self.decimalInt(try lineText()))  // PUT
            case 0x71: try remember(Int(try byte()))  // BINPUT
            case 0x72: try remember(try unsigned(4))  // LONG_BINPUT
            case 0x67: stack.append(try recall(try Self.decimalInt(try lineText())))  // GET
            case 0x68: stack.append(try recall(Int(try byte())))  // BINGET
            case 0x6A: stack.append(try recall(try unsigned(4)))  // LONG_BINGET

            // Known globals, applied by this reader.
            case 0x63:  // GLOBAL
                let module = try lineText(), name = try lineText()
                stack.append(.global(try Global(module: module, name: name)))
            case 0x93:  // STACK_GLOBAL
                guard case .value(.string(let name)) = try pop(), case .value(.string(let module)) = try pop() else {
                    throw PickleError("STACK_GLOBAL's module and name are not text")
                }
                stack.append(.global(try Global(module: module, name: name)))
            case 0x52:  // REDUCE
                let args = try pop(), callable = try pop()
                guard case .global(let g) = callable, case .tuple(let a) = args else {
                    throw PickleError("REDUCE of something that is not a known global and its arguments")
                }
                stack.append(try g.apply(a))
            case 0x81:  // NEWOBJ
                let args = try pop(), cls = try pop()
                stack.append(try Self.newObject(cls, args))
            case 0x92:  // NEWOBJ_EX
                let kwargs = try pop(), args = try pop(), cls = try pop()
                guard case .dict(let k) = kwargs, k.pairs.isEmpty else { throw PickleError("NEWOBJ_EX with keyword arguments") }
                stack.append(try Self.newObject(cls, args))
            case 0x62:  // BUILD
                let state = try pop()
                guard case .uuid(let object) = try top() else { throw PickleError("BUILD on something that is not a uuid.UUID") }
                try object.build(state)

            case 0x50, 0x51: throw PickleError("the pickle uses persistent ids, which Tandem does not load")
            case 0x82, 0x83, 0x84: throw PickleError("the pickle uses copyreg extension codes, which Tandem does not load")
            case 0x97, 0x98: throw PickleError("the pickle uses out-of-band buffers, which Tandem does not load")
            case 0x69, 0x6F: throw PickleError("the pickle builds an instance of a class (INST/OBJ), which Tandem does not load")
            default:
                throw PickleError("unknown opcode 0x\(String(opcode, radix: 16)) at offset \(pos - 1)")
            }
        }
    }

    private mutating func remember(_ index: Int) throws {
        let item = try top()
        if index == memo.count && memoApart.isEmpty {
            memo.append(item)
        } else if index < memo.count {
            memo[index] = item
        } else {
            memoApart[index] = item
        }
    }

    private func recall(_ index: Int) throws -> Item {
        if index >= 0 && index < memo.count { return memo[index] }
        guard let item = memoApart[index] else { throw PickleError("memo entry \(index) is read before it is written") }
        return item
    }

    private func utf8(_ slice: Slice<UnsafeBufferPointer<UInt8>>) throws -> String {
        let bytes = UnsafeBufferPointer(rebasing: slice)
        // A short ASCII str (most keys) needs no validation beyond a scan; the validating initializer
        // costs a generic lookup per call, which only long strings amortize.
        if bytes.count < 64 {
            var ascii = true
            for b in bytes where b >= 0x80 {
                ascii = false
                break
            }
            if ascii { return String(decoding: bytes, as: UTF8.self) }
        }
        guard let s = String(validating: bytes, as: UTF8.self) else { throw PickleError("a str at offset \(pos - bytes.count) is not valid UTF-8") }
        return s
    }

    private static func newObject(_ cls: Item, _ args: Item) throws -> Item {
        guard case .global(let g) = cls else { throw PickleError("NEWOBJ of something that is not a class") }
        guard g == .uuid else { throw PickleError("the pickle makes a \(g.name) object, which Tandem does not load") }
        guard case .tuple(let a) = args, a.isEmpty else { throw PickleError("uuid.UUID made with arguments") }
        return .uuid(UUIDBox())
    }

    // MARK: number and text formats

    /// LONG1 / LONG4's little-endian two's complement.
    fileprivate static func long(_ b: [UInt8]) throws -> Item {
        guard let last = b.last else { return .value(.int(0)) }
        let negative = last & 0x80 != 0
        // Fits in 64 bits when every byte past the eighth only repeats the sign.
        let fits = b.count <= 8 || (b[8...].allSatisfy { $0 == (negative ? 0xFF : 0) } && (b[7] & 0x80 != 0) == negative)
        guard fits else { return .bigInt(b) }
        var v: UInt64 = negative ? ~0 : 0
        for (i, byte) in b.prefix(8).enumerated() {
            v &= ~(UInt64(0xFF) << (8 * UInt64(i)))
            v |= UInt64(byte) << (8 * UInt64(i))
        }
        return .value(.int(Int(Int64(bitPattern: v))))
    }

    static func decimalInt(_ text: String) throws -> Int {
        if let i = Int(text.trimmingCharacters(in: .whitespaces)) { return i }
        let digits = text.trimmingCharacters(in: .whitespaces)
        if !digits.isEmpty, digits.drop(while: { $0 == "-" || $0 == "+" }).allSatisfy(\.isASCII), digits.drop(while: { $0 == "-" || $0 == "+" }).allSatisfy(\.isNumber) {
            throw PickleError("an int beyond 64 bits")
        }
        throw PickleError("\"\(text.prefix(40))\" is not an integer")
    }

    /// Protocol 0-2 `str` from Python 2, which Python 3 reads as ASCII.
    static func ascii(_ bytes: some Collection<UInt8>) throws -> String {
        guard bytes.allSatisfy({ $0 < 0x80 }) else { throw PickleError("a Python 2 string is not ASCII") }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// STRING's quoted argument with its backslash escapes undone.
    static func quoted(_ line: ArraySlice<UInt8>) throws -> [UInt8] {
        guard line.count >= 2, let q = line.first, q == 0x27 || q == 0x22, line.last == q else {
            throw PickleError("STRING's argument is not quoted")
        }
        var out: [UInt8] = []
        var i = line.startIndex + 1
        let end = line.endIndex - 1
        while i < end {
            let c = line[i]
            i += 1
            guard c == 0x5C else { out.append(c); continue }
            guard i < end else { throw PickleError("STRING ends in a backslash") }
            let e = line[i]
            i += 1
            switch e {
            case 0x5C, 0x27, 0x22: out.append(e)
            case 0x6E: out.append(0x0A)
            case 0x72: out.append(0x0D)
            case 0x74: out.append(0x09)
            case 0x78:
                guard end - i >= 2, let v = UInt8(String(decoding: line[i..<(i + 2)], as: UTF8.self), radix: 16) else {
                    throw PickleError("STRING has a bad \\x escape")
                }
                out.append(v)
                i += 2
            default: throw PickleError("STRING has an escape Tandem does not read (\\\(Character(UnicodeScalar(e))))")
            }
        }
        return out
    }

    /// UNICODE's raw-unicode-escape argument: Latin-1 with `\uXXXX` and `\UXXXXXXXX`.
    static func rawUnicodeEscape(_ line: ArraySlice<UInt8>) throws -> String {
        var scalars = String.UnicodeScalarView()
        var i = line.startIndex
        while i < line.endIndex {
            let c = line[i]
            if c == 0x5C, i + 1 < line.endIndex, line[i + 1] == 0x75 || line[i + 1] == 0x55 {
                let n = line[i + 1] == 0x75 ? 4 : 8
                guard line.endIndex - (i + 2) >= n, let v = UInt32(String(decoding: line[(i + 2)..<(i + 2 + n)], as: UTF8.self), radix: 16),
                      let s = Unicode.Scalar(v) else { throw PickleError("UNICODE has a bad escape") }
                scalars.append(s)
                i += 2 + n
            } else {
                scalars.append(Unicode.Scalar(c))
                i += 1
            }
        }
        return String(scalars)
    }
}

// MARK: what the stack holds

/// A value being read: containers are shared objects, because the pickle's memo may refer to one
/// before it is filled (Python's containers are references too).
private enum Item {
    case value(PythonValue)
    /// An int beyond 64 bits, little-endian two's complement (only a `uuid.UUID`'s state may hold one).
    case bigInt([UInt8])
    case list(ListBox)
    case tuple([Item])
    case dict(DictBox)
    case set(SetBox)
    case global(Global)
    case uuid(UUIDBox)
    /// A `datetime.timedelta`, in microseconds.
    case timedelta(Int)
    /// A `datetime.timezone`, its offset in seconds.
    case timezone(Int)

    func materialize(depth: Int, budget: inout Int) throws -> PythonValue {
        guard depth < PickleReader.maxDepth else {
            throw PickleError("the value is nested deeper than \(PickleReader.maxDepth) levels (or holds itself)")
        }
        budget -= 1
        guard budget >= 0 else { throw PickleError("the value expands to more than \(PickleReader.maxValues) values") }
        switch self {
        case .value(let v): return v
        case .bigInt: throw PickleError("an int beyond 64 bits")
        case .list(let l): return .list(try l.items.map { try $0.materialize(depth: depth + 1, budget: &budget) })
        case .tuple(let t): return .tuple(try t.map { try $0.materialize(depth: depth + 1, budget: &budget) })
        case .set(let s):
            var out: [PythonValue] = []
            out.reserveCapacity(s.items.count)
            // Duplicates found by a scan while small, by hashing beyond.
            var seen: Set<PythonValue>? = s.items.count > 16 ? [] : nil
            for item in s.items {
                let v = try item.materialize(depth: depth + 1, budget: &budget)
                try Item.checkHashable(v)
                if seen != nil {
                    if seen!.insert(v).inserted { out.append(v) }
                } else if !out.contains(v) {
                    out.append(v)
                }
            }
            return .set(out)
        case .dict(let d):
            var out: [PythonDictItem] = []
            out.reserveCapacity(d.pairs.count)
            // A later item with the same key replaces the earlier one's value, as in Python; found by a
            // scan while small, by hashing beyond.
            var index: [PythonValue: Int]? = d.pairs.count > 16 ? [:] : nil
            for (k, v) in d.pairs {
                let key = try k.materialize(depth: depth + 1, budget: &budget)
                try Item.checkHashable(key)
                let value = try v.materialize(depth: depth + 1, budget: &budget)
                let at = index != nil ? index![key] : out.firstIndex { $0.key == key }
                if let at { out[at].value = value } else {
                    index?[key] = out.count
                    out.append(PythonDictItem(key, value))
                }
            }
            return .dict(out)
        case .global(let g): throw PickleError("the pickle holds \(g.name) itself, not a value")
        case .uuid(let box):
            guard let u = box.value else { throw PickleError("a uuid.UUID without its state") }
            return .uuid(u)
        case .timedelta: throw PickleError("a datetime.timedelta, which Tandem does not read")
        case .timezone: throw PickleError("a datetime.timezone outside a datetime")
        }
    }

    @inline(__always)
    static func checkHashable(_ v: PythonValue) throws {
        switch v {
        case .list, .dict, .set: throw PickleError("a dict key or set member that Python cannot hash")
        case .tuple(let items): for i in items { try checkHashable(i) }
        default: break
        }
    }
}

private final class ListBox {
    var items: [Item]
    init(_ items: [Item] = []) { self.items = items }
}

private final class SetBox {
    var items: [Item]
    init(_ items: [Item] = []) { self.items = items }
}

private final class DictBox {
    var pairs: [(Item, Item)] = []
    /// Adds alternating keys and values.
    func add(_ flat: [Item]) throws {
        guard flat.count % 2 == 0 else { throw PickleError("a dict's items are not key and value pairs") }
        for i in stride(from: 0, to: flat.count, by: 2) { pairs.append((flat[i], flat[i + 1])) }
    }
}

/// A `uuid.UUID` made by NEWOBJ, waiting for BUILD to give it its number.
private final class UUIDBox {
    var value: UUID?
    func build(_ state: Item) throws {
        var dict: DictBox?
        switch state {
        case .dict(let d): dict = d
        case .tuple(let t) where t.count == 2: if case .dict(let d) = t[1] { dict = d }
        default: break
        }
        guard let dict, let number = dict.pairs.first(where: { if case .value(.string("int")) = $0.0 { true } else { false } })?.1 else {
            throw PickleError("a uuid.UUID's state has no 'int'")
        }
        var le: [UInt8]
        switch number {
        case .value(.int(let i)) where i >= 0: le = withUnsafeBytes(of: UInt64(i).littleEndian, Array.init)
        case .bigInt(let b): le = b
        default: throw PickleError("a uuid.UUID's 'int' is not a 128-bit number")
        }
        while le.count > 16, le.last == 0 { le.removeLast() }
        guard le.count <= 16, le.last.map({ $0 & 0x80 == 0 || le.count == 16 }) ?? true else {
            throw PickleError("a uuid.UUID's 'int' is not a 128-bit number")
        }
        if case .bigInt(let b) = number, let top = b.last, top & 0x80 != 0 { throw PickleError("a uuid.UUID's 'int' is negative") }
        le += Array(repeating: 0, count: 16 - le.count)
        let be = Array(le.reversed())
        value = UUID(uuid: (be[0], be[1], be[2], be[3], be[4], be[5], be[6], be[7], be[8], be[9], be[10], be[11], be[12], be[13], be[14], be[15]))
    }
}

/// The globals a pickle may name.
private enum Global: Equatable {
    case set, frozenset, bytearray, bytes, codecsEncode, datetime, timezone, timedelta, decimal, uuid, safeUUID, orderedDict

    init(module: String, name: String) throws {
        switch (module, name) {
        case ("builtins", "set"), ("__builtin__", "set"): self = .set
        case ("builtins", "frozenset"), ("__builtin__", "frozenset"): self = .frozenset
        case ("builtins", "bytearray"), ("__builtin__", "bytearray"): self = .bytearray
        case ("builtins", "bytes"), ("__builtin__", "bytes"): self = .bytes
        case ("_codecs", "encode"): self = .codecsEncode
        case ("datetime", "datetime"): self = .datetime
        case ("datetime", "timezone"): self = .timezone
        case ("datetime", "timedelta"): self = .timedelta
        case ("decimal", "Decimal"): self = .decimal
        case ("uuid", "UUID"): self = .uuid
        case ("uuid", "SafeUUID"): self = .safeUUID
        case ("collections", "OrderedDict"): self = .orderedDict
        default:
            let shown = "\(module.prefix(60)).\(name.prefix(60))"
            throw PickleError("the pickle names \(shown), which Tandem does not load (it reads data only, never code)")
        }
    }

    var name: String {
        switch self {
        case .set: "set"
        case .frozenset: "frozenset"
        case .bytearray: "bytearray"
        case .bytes: "bytes"
        case .codecsEncode: "_codecs.encode"
        case .datetime: "datetime.datetime"
        case .timezone: "datetime.timezone"
        case .timedelta: "datetime.timedelta"
        case .decimal: "decimal.Decimal"
        case .uuid: "uuid.UUID"
        case .safeUUID: "uuid.SafeUUID"
        case .orderedDict: "collections.OrderedDict"
        }
    }

    /// What calling this global with `args` makes, computed here.
    func apply(_ args: [Item]) throws -> Item {
        func bad() -> PickleError { PickleError("\(name) called with arguments Tandem does not read") }
        switch self {
        case .set, .frozenset:
            switch args.count {
            case 0: return .set(SetBox())
            case 1:
                switch args[0] {
                case .list(let l): return .set(SetBox(l.items))
                case .tuple(let t): return .set(SetBox(t))
                case .set(let s): return .set(SetBox(s.items))
                default: throw bad()
                }
            default: throw bad()
            }
        case .bytes, .bytearray:
            if args.isEmpty { return .value(.bytes([])) }
            if args.count == 1, case .value(.bytes(let b)) = args[0] { return .value(.bytes(b)) }
            if args.count == 2 { return try Global.codecsEncode.apply(args) }
            throw bad()
        case .codecsEncode:
            guard args.count == 2, case .value(.string(let s)) = args[0], case .value(.string(let encoding)) = args[1],
                  encoding == "latin1" || encoding == "latin-1" else { throw bad() }
            var out: [UInt8] = []
            for scalar in s.unicodeScalars {
                guard scalar.value < 256 else { throw PickleError("_codecs.encode: the text is not Latin-1") }
                out.append(UInt8(scalar.value))
            }
            return .value(.bytes(out))
        case .datetime:
            guard (1...2).contains(args.count), case .value(.bytes(let b)) = args[0], b.count == 10 else { throw bad() }
            var offset: Int?
            if args.count == 2 {
                switch args[1] {
                case .timezone(let s): offset = s
                case .value(.none): offset = nil
                default: throw PickleError("a datetime's time zone is not a datetime.timezone (zoneinfo and pytz zones are not read)")
                }
            }
            let dt = PythonDateTime(year: Int(b[0]) << 8 | Int(b[1]), month: Int(b[2] & 0x7F), day: Int(b[3]), hour: Int(b[4]),
                                    minute: Int(b[5]), second: Int(b[6]), microsecond: Int(b[7]) << 16 | Int(b[8]) << 8 | Int(b[9]),
                                    utcOffsetSeconds: offset)
            guard dt.date != nil else { throw PickleError("a datetime with a field out of range") }
            return .value(.datetime(dt))
        case .timedelta:
            var parts = [0, 0, 0]
            guard args.count <= 3 else { throw bad() }
            for (i, a) in args.enumerated() {
                guard case .value(.int(let v)) = a, abs(v) < 1_000_000_000 else { throw bad() }
                parts[i] = v
            }
            return .timedelta((parts[0] * 86_400 + parts[1]) * 1_000_000 + parts[2])
        case .timezone:
            guard (1...2).contains(args.count), case .timedelta(let micros) = args[0], micros % 1_000_000 == 0,
                  abs(micros) < 86_400_000_000 else { throw bad() }
            return .timezone(micros / 1_000_000)
        case .decimal:
            guard args.count == 1, case .value(.string(let s)) = args[0] else { throw bad() }
            guard s.utf8.count <= 400, s.allSatisfy({ $0.isASCII && ($0.isNumber || "+-.eE".contains($0)) })
                || ["NaN", "-NaN", "sNaN", "Infinity", "-Infinity"].contains(s) else {
                throw PickleError("decimal.Decimal of \"\(s.prefix(40))\"")
            }
            return .value(.decimal(s))
        case .safeUUID:
            return .value(.none)
        case .orderedDict:
            let dict = DictBox()
            if args.count == 1, case .list(let l) = args[0] {
                for pair in l.items {
                    guard case .tuple(let kv) = pair, kv.count == 2 else { throw bad() }
                    try dict.add(kv)
                }
            } else if !args.isEmpty { throw bad() }
            return .dict(dict)
        case .uuid:
            throw PickleError("uuid.UUID called directly, which Python's pickles do not do")
        }
    }
}
