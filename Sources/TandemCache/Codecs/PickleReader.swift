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
    static let maxDepth: Int32 = 200
    /// The most values one pickle may expand to (shared references count each time they appear).
    static let maxValues: Int32 = 1 << 20

    /// Reads the pickle in `bytes`.
    static func read(_ bytes: [UInt8]) throws -> PythonValue {
        try bytes.withUnsafeBufferPointer { buffer in
            var reader = PickleReader(buffer)
            return try reader.run()
        }
    }

    // The values are built in place: the stack holds values (a container is filled where it lies),
    // a parallel array their sizes and depths. The memo names a container by where it lies until it
    // leaves the stack, then holds its value. A container the memo handed out (the pickle shares it)
    // may not change any more: Python's own pickles never do that, except for a value that holds
    // itself, which is refused.

    /// The pickle (valid while `read` runs).
    private let bytes: UnsafeBufferPointer<UInt8>
    private var pos = 0
    private var stack: [Entry] = []
    private var meta: [Meta] = []
    /// Where each open MARK began, as a stack length.
    private var marks: [Int] = []
    /// The memo: entries 0, 1, 2... as MEMOIZE (and most PUTs) write them, and any other index apart.
    private var memo: [Memo] = []
    private var memoApart: [Int: Memo] = [:]
    /// Memo entries beyond the first that name a container being built, by its id.
    private var memoMore: [Int32: [Int]] = [:]
    /// Key (or member) positions of a large dict or set being built, by its id.
    private var indexes: [Int32: [PythonValue: Int]] = [:]
    /// Items of a dict whose values are ints beyond 64 bits (only a `uuid.UUID`'s state), by its id.
    private var bigInts: [Int32: [(PythonValue, [UInt8])]] = [:]
    private var lastID: Int32 = 0

    private init(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
        stack.reserveCapacity(32)
        meta.reserveCapacity(32)
        memo.reserveCapacity(32)
        marks.reserveCapacity(8)
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

    // Static, as every helper the opcodes call on their hot path: a call of a non-mutating method from
    // a mutating one copied the whole reader (its arrays and tables retained and released each time).
    private static func utf8(_ slice: Slice<UnsafeBufferPointer<UInt8>>) throws -> String {
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
        guard let s = String(validating: bytes, as: UTF8.self) else { throw PickleError("a str at offset \(slice.startIndex) is not valid UTF-8") }
        return s
    }

    // MARK: the stack

    private var base: Int { marks.last ?? 0 }

    @inline(__always)
    private mutating func push(_ v: PythonValue) {
        stack.append(.value(v))
        meta.append(Meta())
    }

    private mutating func push(_ e: Entry, _ m: Meta = Meta()) {
        stack.append(e)
        meta.append(m)
    }

    private mutating func pushContainer(_ v: PythonValue) {
        lastID += 1
        stack.append(.value(v))
        meta.append(Meta(id: lastID, building: true))
    }

    /// Takes the top entry off the stack (a container built there is finished).
    private mutating func pop() throws -> (Entry, Meta) {
        guard stack.count > base else { throw PickleError("an opcode at offset \(pos - 1) found the stack empty") }
        if meta[stack.count - 1].building { finish(stack.count - 1) }
        return (stack.removeLast(), meta.removeLast())
    }

    /// Closes the innermost MARK; its items are `stack[start...]` (finished), to be dropped with
    /// ``truncate(_:)`` once used.
    private mutating func popMark() throws -> Int {
        guard let start = marks.popLast() else { throw PickleError("an opcode at offset \(pos - 1) needs a MARK and there is none") }
        for i in start..<stack.count where meta[i].building { finish(i) }
        return start
    }

    private mutating func truncate(_ start: Int) {
        stack.removeSubrange(start...)
        meta.removeSubrange(start...)
    }

    /// A container leaves the stack: its memo entries now hold its value.
    private mutating func finish(_ i: Int) {
        meta[i].building = false
        let id = meta[i].id
        if !indexes.isEmpty { indexes[id] = nil }
        var shared = meta[i]
        shared.shared = true
        if meta[i].firstMemo >= 0 { store(Int(meta[i].firstMemo), .done(stack[i], shared)) }
        if !memoMore.isEmpty, let more = memoMore.removeValue(forKey: id) { for m in more { store(m, .done(stack[i], shared)) } }
    }

    /// Moves the value at `i` out (leaving None), to put it into a container.
    private mutating func moveOut(_ i: Int) throws -> PythonValue {
        var e = Entry.value(.none)
        swap(&e, &stack[i])
        try checkNoBigInts(meta[i])
        return try Self.content(e)
    }

    /// A dict holding an int beyond 64 bits (a `uuid.UUID`'s state) is not a value.
    @inline(__always)
    private mutating func checkNoBigInts(_ m: Meta) throws {
        if !bigInts.isEmpty, m.id != 0, bigInts[m.id] != nil { throw PickleError("an int beyond 64 bits") }
    }

    /// The value an entry stands for, where a value is needed.
    private static func content(_ e: Entry) throws -> PythonValue {
        switch e {
        case .value(let v): return v
        case .special(let special):
            switch special {
            case .uuid(let u?): return .uuid(u)
            case .uuid(nil): throw PickleError("a uuid.UUID without its state")
            case .global(let g): throw PickleError("the pickle holds \(g.name) itself, not a value")
            case .bigInt: throw PickleError("an int beyond 64 bits")
            case .timedelta: throw PickleError("a datetime.timedelta, which Tandem does not read")
            case .timezone: throw PickleError("a datetime.timezone outside a datetime")
            case .arguments(let items): return .tuple(try items.map { try content($0) })
            }
        }
    }

    /// Counts the entry at `child` into the container at `parent`.
    @inline(__always)
    private mutating func grow(_ parent: Int, by child: Int) throws {
        meta[parent].weight += meta[child].weight
        guard meta[parent].weight <= Self.maxValues else { throw PickleError("the value expands to more than \(Self.maxValues) values") }
        if meta[child].depth >= meta[parent].depth {
            meta[parent].depth = meta[child].depth + 1
            guard meta[parent].depth < Self.maxDepth else { throw PickleError("the value is nested deeper than \(Self.maxDepth) levels") }
        }
    }

    /// The container at `c`, checked to be one that may still change.
    private mutating func changeable(_ c: Int, _ what: String) throws {
        guard c >= base, c >= 0, c < stack.count else { throw PickleError("\(what) found no container") }
        guard !meta[c].shared else {
            throw PickleError("\(what) changes a container after it was shared (a value that holds itself, which Tandem does not read)")
        }
    }

    /// APPEND / APPENDS: the entries `start..<end` go into the list at `c`.
    private mutating func extendList(_ c: Int, _ start: Int, _ end: Int, _ what: String) throws {
        try changeable(c, what)
        guard case .value(.list(var list)) = stack[c] else { throw PickleError("\(what) to something that is not a list") }
        stack[c] = .value(.none)
        defer { stack[c] = .value(.list(list)) }
        list.reserveCapacity(list.count + end - start)
        for i in start..<end {
            try grow(c, by: i)
            list.append(try moveOut(i))
        }
    }

    /// SETITEM / SETITEMS: the keys and values `start..<end` go into the dict at `c`.
    private mutating func setItems(_ c: Int, _ start: Int, _ end: Int, _ what: String) throws {
        try changeable(c, what)
        guard (end - start) % 2 == 0 else { throw PickleError("a dict's items are not key and value pairs") }
        guard case .value(.dict(var dict)) = stack[c] else { throw PickleError("\(what) on something that is not a dict") }
        stack[c] = .value(.none)
        defer { stack[c] = .value(.dict(dict)) }
        let id = meta[c].id
        dict.reserveCapacity(dict.count + (end - start) / 2)
        for k in stride(from: start, to: end, by: 2) {
            let key = try moveOut(k)
            try Self.checkHashable(key)
            try grow(c, by: k)
            // An int beyond 64 bits may only be a uuid.UUID's number: kept beside the dict for BUILD.
            if case .special(.bigInt(let b)) = stack[k + 1] {
                bigInts[id, default: []].append((key, b))
                continue
            }
            try grow(c, by: k + 1)
            let value = try moveOut(k + 1)
            // A later item with the same key replaces the earlier one's value, as in Python: found by a
            // scan while the dict is small, by hashing beyond.
            guard dict.count >= 16 else {
                if let at = dict.firstIndex(where: { $0.key == key }) { dict[at].value = value } else { dict.append(PythonDictItem(key, value)) }
                continue
            }
            if indexes[id] == nil {
                indexes[id] = Dictionary(dict.enumerated().map { ($0.element.key, $0.offset) }, uniquingKeysWith: { _, b in b })
            }
            if let at = indexes[id]?[key] {
                dict[at].value = value
            } else {
                indexes[id]?[key] = dict.count
                dict.append(PythonDictItem(key, value))
            }
        }
    }

    /// ADDITEMS (and a new set or frozenset): the entries `start..<end` go into the set at `c`.
    private mutating func addItems(_ c: Int, _ start: Int, _ end: Int, _ what: String) throws {
        try changeable(c, what)
        guard case .value(.set(var set)) = stack[c] else { throw PickleError("\(what) on something that is not a set") }
        stack[c] = .value(.none)
        defer { stack[c] = .value(.set(set)) }
        let id = meta[c].id
        for i in start..<end {
            let v = try moveOut(i)
            try Self.checkHashable(v)
            try grow(c, by: i)
            guard set.count >= 16 else {
                if !set.contains(v) { set.append(v) }
                continue
            }
            if indexes[id] == nil {
                indexes[id] = Dictionary(set.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { _, b in b })
            }
            if indexes[id]?[v] == nil {
                indexes[id]?[v] = set.count
                set.append(v)
            }
        }
    }

    /// TUPLE, TUPLE1-3: the entries `start...` become one tuple (the arguments of a call to come when
    /// one of them is a global, a time zone or the like).
    private mutating func makeTuple(_ start: Int) throws {
        var m = Meta()
        m.weight = 1
        let special = stack[start...].contains { if case .special(let s) = $0, !s.isValue { true } else { false } }
        if special {
            let items = Array(stack[start...])
            truncate(start)
            push(.special(.arguments(items)))
            return
        }
        var values: [PythonValue] = []
        values.reserveCapacity(stack.count - start)
        push(.value(.none))  // the tuple's place, counted into as its items are moved in
        let t = stack.count - 1
        for i in start..<t {
            try grow(t, by: i)
            values.append(try moveOut(i))
        }
        let tm = meta[t]
        truncate(start)
        push(.value(.tuple(values)), Meta(weight: tm.weight, depth: tm.depth))
    }

    // MARK: the memo

    private mutating func store(_ index: Int, _ entry: Memo) {
        if index == memo.count && memoApart.isEmpty {
            memo.append(entry)
        } else if index >= 0 && index < memo.count {
            memo[index] = entry
        } else {
            memoApart[index] = entry
        }
    }

    private mutating func remember(_ index: Int) throws {
        guard stack.count > base else { throw PickleError("a memo write at offset \(pos - 1) found the stack empty") }
        let top = stack.count - 1
        guard meta[top].building else {
            store(index, .done(stack[top], meta[top].sharedCopy))
            return
        }
        // A container being built: the entry points at it until it leaves the stack.
        store(index, .building(id: meta[top].id, at: top))
        if meta[top].firstMemo < 0 && index <= Int(Int32.max) {
            meta[top].firstMemo = Int32(index)
        } else {
            memoMore[meta[top].id, default: []].append(index)
        }
    }

    private mutating func recall(_ index: Int) throws {
        let entry: Memo
        if index >= 0 && index < memo.count {
            entry = memo[index]
        } else if let e = memoApart[index] {
            entry = e
        } else {
            throw PickleError("memo entry \(index) is read before it is written")
        }
        switch entry {
        case .done(let e, let m): push(e, m)
        case .building(let id, let at):
            guard at < stack.count, meta[at].id == id, meta[at].building else { throw PickleError("memo entry \(index) names a container that is gone") }
            // The container as it is now; neither it nor this copy may change after this.
            meta[at].shared = true
            push(stack[at], meta[at].sharedCopy)
        }
    }

    // MARK: the opcodes

    private mutating func run() throws -> PythonValue {
        while true {
            let opcode = try byte()
            switch opcode {
            case 0x80:  // PROTO
                let p = try byte()
                guard p <= 5 else { throw PickleError("pickle protocol \(p) is newer than 5") }
            case 0x95: _ = try length(8)  // FRAME: the frame's bytes follow
            case 0x2E:  // STOP
                let (e, m) = try pop()
                try checkNoBigInts(m)
                return try Self.content(e)
            case 0x28: marks.append(stack.count)  // MARK
            case 0x30: _ = try pop()  // POP
            case 0x31: truncate(try popMark())  // POP_MARK
            case 0x32:  // DUP
                guard stack.count > base else { throw PickleError("DUP found the stack empty") }
                let top = stack.count - 1
                meta[top].shared = true
                push(stack[top], meta[top].sharedCopy)

            // Constants and numbers.
            case 0x4E: push(.none)
            case 0x88: push(.bool(true))
            case 0x89: push(.bool(false))
            case 0x4B: push(.int(Int(try byte())))  // BININT1
            case 0x4D: push(.int(try unsigned(2)))  // BININT2
            case 0x4A:  // BININT
                push(.int(Int(Int32(bitPattern: UInt32(try unsigned(4))))))
            case 0x8A: push(try Self.long(Array(try take(try length(1)))))  // LONG1
            case 0x8B: push(try Self.long(Array(try take(try length(4)))))  // LONG4
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
            case 0x8C: push(.string(try Self.utf8(try take(try length(1)))))  // SHORT_BINUNICODE
            case 0x58: push(.string(try Self.utf8(try take(try length(4)))))  // BINUNICODE
            case 0x8D: push(.string(try Self.utf8(try take(try length(8)))))  // BINUNICODE8
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
            case 0x5D: pushContainer(.list([]))  // EMPTY_LIST
            case 0x29: push(.tuple([]))  // EMPTY_TUPLE
            case 0x7D: pushContainer(.dict([]))  // EMPTY_DICT
            case 0x8F: pushContainer(.set([]))  // EMPTY_SET
            case 0x6C, 0x64, 0x91:  // LIST, DICT, FROZENSET: a new container of the mark's items
                let start = try popMark()
                let end = stack.count
                pushContainer(opcode == 0x6C ? .list([]) : opcode == 0x64 ? .dict([]) : .set([]))
                let c = stack.count - 1
                switch opcode {
                case 0x6C: try extendList(c, start, end, "LIST")
                case 0x64: try setItems(c, start, end, "DICT")
                default: try addItems(c, start, end, "FROZENSET")
                }
                let (e, m) = (stack[c], meta[c])
                truncate(start)
                push(e, m)
            case 0x74: try makeTuple(try popMark())  // TUPLE
            case 0x85, 0x86, 0x87:  // TUPLE1-3
                let n = Int(opcode) - 0x84
                guard stack.count - base >= n else { throw PickleError("TUPLE\(n) found too few items") }
                for i in (stack.count - n)..<stack.count where meta[i].building { finish(i) }
                try makeTuple(stack.count - n)
            case 0x61:  // APPEND
                guard stack.count - base >= 2 else { throw PickleError("APPEND found the stack empty") }
                let i = stack.count - 1
                if meta[i].building { finish(i) }
                try extendList(i - 1, i, i + 1, "APPEND")
                truncate(i)
            case 0x65:  // APPENDS
                let start = try popMark()
                try extendList(start - 1, start, stack.count, "APPENDS")
                truncate(start)
            case 0x73:  // SETITEM
                guard stack.count - base >= 3 else { throw PickleError("SETITEM found the stack empty") }
                let k = stack.count - 2
                for i in k..<stack.count where meta[i].building { finish(i) }
                try setItems(k - 1, k, k + 2, "SETITEM")
                truncate(k)
            case 0x75:  // SETITEMS
                let start = try popMark()
                try setItems(start - 1, start, stack.count, "SETITEMS")
                truncate(start)
            case 0x90:  // ADDITEMS
                let start = try popMark()
                try addItems(start - 1, start, stack.count, "ADDITEMS")
                truncate(start)

            // The memo.
            case 0x94: try remember(memo.count + memoApart.count)  // MEMOIZE
            case 0x70: try remember(try Self.decimalInt(try lineText()))  // PUT
            case 0x71: try remember(Int(try byte()))  // BINPUT
            case 0x72: try remember(try unsigned(4))  // LONG_BINPUT
            case 0x67: try recall(try Self.decimalInt(try lineText()))  // GET
            case 0x68: try recall(Int(try byte()))  // BINGET
            case 0x6A: try recall(try unsigned(4))  // LONG_BINGET

            // Known globals, applied by this reader.
            case 0x63:  // GLOBAL
                let module = try lineText(), name = try lineText()
                push(.special(.global(try Global(module: module, name: name))))
            case 0x93:  // STACK_GLOBAL
                let (name, _) = try pop()
                let (module, _) = try pop()
                guard case .value(.string(let n)) = name, case .value(.string(let m)) = module else {
                    throw PickleError("STACK_GLOBAL's module and name are not text")
                }
                push(.special(.global(try Global(module: m, name: n))))
            case 0x52:  // REDUCE
                let (args, argsMeta) = try pop()
                let (callable, _) = try pop()
                guard case .special(.global(let g)) = callable, let a = args.arguments else {
                    throw PickleError("REDUCE of something that is not a known global and its arguments")
                }
                let made = try g.apply(a)
                if made.isContainer {
                    // OrderedDict() and set(...): SETITEMS or ADDITEMS may follow.
                    pushContainer(.none)
                    stack[stack.count - 1] = made.entry
                    if case .value(.set(let items)) = made.entry {  // set(iterable): its members, without repeats
                        stack[stack.count - 1] = .value(.set([]))
                        for item in items { push(item) }
                        try addItems(stack.count - 1 - items.count, stack.count - items.count, stack.count, "set()")
                        truncate(stack.count - items.count)
                    } else if case .value(.dict(let items)) = made.entry, !items.isEmpty {  // OrderedDict(pairs)
                        stack[stack.count - 1] = .value(.dict([]))
                        for item in items {
                            push(item.key)
                            push(item.value)
                        }
                        let n = items.count * 2
                        try setItems(stack.count - 1 - n, stack.count - n, stack.count, "OrderedDict()")
                        truncate(stack.count - n)
                    }
                    // The members came in one argument: they count for what it counted for.
                    let c = stack.count - 1
                    meta[c].weight = max(meta[c].weight, argsMeta.weight)
                    meta[c].depth = max(meta[c].depth, argsMeta.depth)
                } else {
                    push(made.entry)
                }
            case 0x81:  // NEWOBJ
                let (args, _) = try pop()
                let (cls, _) = try pop()
                push(try Self.newObject(cls, args))
            case 0x92:  // NEWOBJ_EX
                let (kwargs, _) = try pop()
                let (args, _) = try pop()
                let (cls, _) = try pop()
                guard case .value(.dict(let k)) = kwargs, k.isEmpty else { throw PickleError("NEWOBJ_EX with keyword arguments") }
                push(try Self.newObject(cls, args))
            case 0x62:  // BUILD
                let (state, stateMeta) = try pop()
                guard stack.count > base, case .special(.uuid(nil)) = stack[stack.count - 1] else {
                    throw PickleError("BUILD on something that is not a new uuid.UUID")
                }
                stack[stack.count - 1] = .special(.uuid(try uuid(fromState: state, stateMeta)))

            case 0x50, 0x51: throw PickleError("the pickle uses persistent ids, which Tandem does not load")
            case 0x82, 0x83, 0x84: throw PickleError("the pickle uses copyreg extension codes, which Tandem does not load")
            case 0x97, 0x98: throw PickleError("the pickle uses out-of-band buffers, which Tandem does not load")
            case 0x69, 0x6F: throw PickleError("the pickle builds an instance of a class (INST/OBJ), which Tandem does not load")
            default:
                throw PickleError("unknown opcode 0x\(String(opcode, radix: 16)) at offset \(pos - 1)")
            }
        }
    }

    private static func newObject(_ cls: Entry, _ args: Entry) throws -> Entry {
        guard case .special(.global(let g)) = cls else { throw PickleError("NEWOBJ of something that is not a class") }
        guard g == .uuid else { throw PickleError("the pickle makes a \(g.name) object, which Tandem does not load") }
        guard let a = args.arguments, a.isEmpty else { throw PickleError("uuid.UUID made with arguments") }
        return .special(.uuid(nil))
    }

    /// A `uuid.UUID`'s number from its state: `{'int': N}`.
    private mutating func uuid(fromState state: Entry, _ m: Meta) throws -> UUID {
        var le: [UInt8]
        if let big = bigInts[m.id]?.first(where: { $0.0 == .string("int") }) {
            guard big.1.last.map({ $0 & 0x80 == 0 }) ?? true else { throw PickleError("a uuid.UUID's 'int' is negative") }
            le = big.1
        } else if case .value(.dict(let items)) = state, case .int(let i)? = items.first(where: { $0.key == .string("int") })?.value, i >= 0 {
            le = withUnsafeBytes(of: UInt64(i).littleEndian, Array.init)
        } else {
            throw PickleError("a uuid.UUID's state has no 'int' that is a 128-bit number")
        }
        while le.count > 16, le.last == 0 { le.removeLast() }
        guard le.count <= 16 else { throw PickleError("a uuid.UUID's 'int' is not a 128-bit number") }
        le += Array(repeating: 0, count: 16 - le.count)
        let be = Array(le.reversed())
        return UUID(uuid: (be[0], be[1], be[2], be[3], be[4], be[5], be[6], be[7], be[8], be[9], be[10], be[11], be[12], be[13], be[14], be[15]))
    }

    /// Refuses what Python cannot use as a dict key or set member.
    @inline(__always)
    static func checkHashable(_ v: PythonValue) throws {
        switch v {
        case .list, .dict, .set: throw PickleError("a dict key or set member that Python cannot hash")
        case .tuple(let items): for i in items { try checkHashable(i) }
        default: break
        }
    }

    // MARK: number and text formats

    /// LONG1 / LONG4's little-endian two's complement.
    fileprivate static func long(_ b: [UInt8]) throws -> Entry {
        guard let last = b.last else { return .value(.int(0)) }
        let negative = last & 0x80 != 0
        // Fits in 64 bits when every byte past the eighth only repeats the sign.
        let fits = b.count <= 8 || (b[8...].allSatisfy { $0 == (negative ? 0xFF : 0) } && (b[7] & 0x80 != 0) == negative)
        guard fits else { return .special(.bigInt(b)) }
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

/// One entry of the pickle machine's stack: a value (a container may still be filling), or one of the
/// things that only exist while a value is made.
private enum Entry {
    case value(PythonValue)
    case special(Special)

    /// The items of a tuple, as the arguments of a call.
    var arguments: [Entry]? {
        switch self {
        case .value(.tuple(let items)): return items.map { .value($0) }
        case .special(.arguments(let items)): return items
        default: return nil
        }
    }
}

/// A stack entry's bookkeeping (kept apart from the values, so that it is copied as plain bytes).
private struct Meta {
    /// The values it counts for (shared references count each time) and how deep it nests.
    var weight: Int32 = 1
    var depth: Int32 = 0
    /// A container's id (its large-index and big-int tables are kept by it).
    var id: Int32 = 0
    /// The first memo entry that names the container while it is built.
    var firstMemo: Int32 = -1
    /// A container still on the stack being filled.
    var building = false
    /// Handed out by the memo (or DUP): it may not change any more.
    var shared = false

    init(weight: Int32 = 1, depth: Int32 = 0, id: Int32 = 0, building: Bool = false) {
        self.weight = weight
        self.depth = depth
        self.id = id
        self.building = building
    }

    /// This entry as the memo hands it out: finished and shared.
    var sharedCopy: Meta {
        var m = self
        m.building = false
        m.shared = true
        m.firstMemo = -1
        return m
    }
}

private indirect enum Special {
    case global(Global)
    /// An int beyond 64 bits, little-endian two's complement (only a `uuid.UUID`'s state may hold one).
    case bigInt([UInt8])
    /// A `datetime.timedelta`, in microseconds.
    case timedelta(Int)
    /// A `datetime.timezone`, its offset in seconds.
    case timezone(Int)
    /// A `uuid.UUID` (nil until BUILD gives it its number).
    case uuid(UUID?)
    /// A tuple holding one of these, to be the arguments of REDUCE.
    case arguments([Entry])

    /// True for what is a value already (a finished UUID).
    var isValue: Bool { if case .uuid(_?) = self { true } else { false } }
}

private enum Memo {
    case done(Entry, Meta)
    case building(id: Int32, at: Int)
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
    func apply(_ args: [Entry]) throws -> (entry: Entry, isContainer: Bool) {
        func bad() -> PickleError { PickleError("\(name) called with arguments Tandem does not read") }
        switch self {
        case .set, .frozenset:
            switch args.count {
            case 0: return (.value(.set([])), self == .set)
            case 1:
                // The members go in through ADDITEMS' rules (no repeats, hashable) in the reader.
                switch args[0] {
                case .value(.list(let items)), .value(.tuple(let items)), .value(.set(let items)): return (.value(.set(items)), true)
                default: throw bad()
                }
            default: throw bad()
            }
        case .bytes, .bytearray:
            if args.isEmpty { return (.value(.bytes([])), false) }
            if args.count == 1, case .value(.bytes(let b)) = args[0] { return (.value(.bytes(b)), false) }
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
            return (.value(.bytes(out)), false)
        case .datetime:
            guard (1...2).contains(args.count), case .value(.bytes(let b)) = args[0], b.count == 10 else { throw bad() }
            var offset: Int?
            if args.count == 2 {
                switch args[1] {
                case .special(.timezone(let s)): offset = s
                case .value(.none): offset = nil
                default: throw PickleError("a datetime's time zone is not a datetime.timezone (zoneinfo and pytz zones are not read)")
                }
            }
            let dt = PythonDateTime(year: Int(b[0]) << 8 | Int(b[1]), month: Int(b[2] & 0x7F), day: Int(b[3]), hour: Int(b[4]),
                                    minute: Int(b[5]), second: Int(b[6]), microsecond: Int(b[7]) << 16 | Int(b[8]) << 8 | Int(b[9]),
                                    utcOffsetSeconds: offset)
            guard dt.date != nil else { throw PickleError("a datetime with a field out of range") }
            return (.value(.datetime(dt)), false)
        case .timedelta:
            var parts = [0, 0, 0]
            guard args.count <= 3 else { throw bad() }
            for (i, a) in args.enumerated() {
                guard case .value(.int(let v)) = a, abs(v) < 1_000_000_000 else { throw bad() }
                parts[i] = v
            }
            return (.special(.timedelta((parts[0] * 86_400 + parts[1]) * 1_000_000 + parts[2])), false)
        case .timezone:
            guard (1...2).contains(args.count), case .special(.timedelta(let micros)) = args[0], micros % 1_000_000 == 0,
                  abs(micros) < 86_400_000_000 else { throw bad() }
            return (.special(.timezone(micros / 1_000_000)), false)
        case .decimal:
            guard args.count == 1, case .value(.string(let s)) = args[0] else { throw bad() }
            guard s.utf8.count <= 400, s.allSatisfy({ $0.isASCII && ($0.isNumber || "+-.eE".contains($0)) })
                || ["NaN", "-NaN", "sNaN", "Infinity", "-Infinity"].contains(s) else {
                throw PickleError("decimal.Decimal of \"\(s.prefix(40))\"")
            }
            return (.value(.decimal(s)), false)
        case .safeUUID:
            return (.value(.none), false)
        case .orderedDict:
            // The pairs go in through SETITEMS' rules in the reader.
            var pairs: [PythonDictItem] = []
            if args.count == 1, case .value(.list(let l)) = args[0] {
                for pair in l {
                    guard case .tuple(let kv) = pair, kv.count == 2 else { throw bad() }
                    pairs.append(PythonDictItem(kv[0], kv[1]))
                }
            } else if !args.isEmpty { throw bad() }
            return (.value(.dict(pairs)), true)
        case .uuid:
            throw PickleError("uuid.UUID called directly, which Python's pickles do not do")
        }
    }
}
