import CCompression

/// Why a value could not be compressed, or decompressed within the bound.
struct CompressionError: Error, CustomStringConvertible, Sendable {
    let description: String
    init(_ description: String) { self.description = description }
}

/// `OPTIONS.COMPRESSOR`: compresses stored values as django-redis 6.0's compressors do, so that a
/// cache shared with a Django app reads the same bytes on both sides.
///
/// A value is compressed when it is longer than ``minimumLength`` and is not an integer (integers
/// stay decimal text, so that `incr` works on them). Reading decompresses a value that is in the
/// compressor's format and reads any other as it is, as django-redis does (so values written before
/// the compressor was turned on still read). A value that would decompress to more than
/// ``maximumDecompressedBytes`` is an error, never a process out of memory.
public enum ValueCompressor: String, Sendable, CaseIterable {
    /// zlib (level 6), as `zlib.compress`.
    case zlib
    /// gzip (level 9), as `gzip.compress`.
    case gzip
    /// xz (preset 4, CRC64 check), as `lzma.compress`; reads `.lzma` too.
    case lzma
    /// The LZ4 frame format, as `lz4.frame.compress`.
    case lz4
    /// A zstd frame (level 3), as `pyzstd.compress`.
    case zstd

    /// django-redis's minimum: values of at most this many bytes are stored as they are.
    public var minimumLength: Int { self == .lzma ? 100 : 15 }

    /// The most bytes one value may decompress to (512 MiB, Redis's largest value).
    public static let maximumDecompressedBytes = 512 << 20

    /// The setting's value for `OPTIONS.COMPRESSOR`, or an error that names the accepted ones.
    static func parse(_ raw: String?, alias: String) throws -> ValueCompressor? {
        guard let raw else { return nil }
        if let c = ValueCompressor(rawValue: raw.lowercased()) { return c }
        throw CacheError.invalidSetting(alias: alias, field: "OPTIONS.COMPRESSOR",
                                        reason: "expected one of \(allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")), got \"\(raw)\"")
    }

    /// `input` compressed (whatever its length: the caller applies ``minimumLength``).
    func compress(_ input: [UInt8]) throws -> [UInt8] {
        guard input.count <= Int(UInt32.max) else { throw CompressionError("a value of \(input.count) bytes is too large to compress") }
        switch self {
        case .zlib: return try Self.deflate(input, level: 6, windowBits: 15)
        case .gzip: return try Self.deflate(input, level: 9, windowBits: 31)
        case .lzma: return try Self.xz(input)
        case .lz4: return try Self.lz4Frame(input)
        case .zstd: return try Self.zstdFrame(input)
        }
    }

    /// `input` decompressed; nil when it is not in this compressor's format (or is damaged), so it
    /// is read as it is.
    func decompress(_ input: [UInt8], limit: Int = ValueCompressor.maximumDecompressedBytes) throws -> [UInt8]? {
        // Each format's magic first: most values that are not compressed never start a decoder.
        switch self {
        case .zlib:
            guard input.count >= 2, input[0] & 0x0F == 8, (UInt16(input[0]) << 8 | UInt16(input[1])) % 31 == 0 else { return nil }
            return try Self.inflate(input, windowBits: 15, limit: limit)
        case .gzip:
            guard input.starts(with: [0x1F, 0x8B]) else { return nil }
            return try Self.inflate(input, windowBits: 31, limit: limit)
        case .lzma:
            guard input.starts(with: [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) || input.first == 0x5D else { return nil }
            return try Self.unxz(input, limit: limit)
        case .lz4:
            guard input.starts(with: [0x04, 0x22, 0x4D, 0x18]) else { return nil }
            return try Self.unlz4(input, limit: limit)
        case .zstd:
            guard input.starts(with: [0x28, 0xB5, 0x2F, 0xFD]) else { return nil }
            return try Self.unzstd(input, limit: limit)
        }
    }

    private static let chunk = 64 * 1024

    private static func tooLarge(_ limit: Int) -> CompressionError {
        CompressionError("the value decompresses to more than \(limit) bytes")
    }

    // MARK: zlib and gzip

    private static func deflate(_ input: [UInt8], level: Int32, windowBits: Int32) throws -> [UInt8] {
        var s = z_stream()
        guard ccompression_deflate_init(&s, level, windowBits) == Z_OK else { throw CompressionError("zlib could not start") }
        defer { deflateEnd(&s) }
        var out = [UInt8](repeating: 0, count: Int(deflateBound(&s, uLong(input.count))) + 32)
        let rc = input.withUnsafeBufferPointer { i in
            out.withUnsafeMutableBufferPointer { o in
                s.next_in = UnsafeMutablePointer(mutating: i.baseAddress)
                s.avail_in = uInt(i.count)
                s.next_out = o.baseAddress
                s.avail_out = uInt(o.count)
                return CCompression.deflate(&s, Z_FINISH)
            }
        }
        guard rc == Z_STREAM_END else { throw CompressionError("zlib failed to compress (\(rc))") }
        out.removeSubrange(Int(s.total_out)...)
        return out
    }

    private static func inflate(_ input: [UInt8], windowBits: Int32, limit: Int) throws -> [UInt8]? {
        var s = z_stream()
        guard ccompression_inflate_init(&s, windowBits) == Z_OK else { throw CompressionError("zlib could not start") }
        defer { inflateEnd(&s) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: chunk)
        return try input.withUnsafeBufferPointer { i -> [UInt8]? in
            s.next_in = UnsafeMutablePointer(mutating: i.baseAddress)
            s.avail_in = uInt(i.count)
            while true {
                let rc = buffer.withUnsafeMutableBufferPointer { o -> Int32 in
                    s.next_out = o.baseAddress
                    s.avail_out = uInt(o.count)
                    return CCompression.inflate(&s, Z_NO_FLUSH)
                }
                let produced = chunk - Int(s.avail_out)
                out += buffer[0..<produced]
                if out.count > limit { throw tooLarge(limit) }
                if rc == Z_STREAM_END { return out }
                // Damaged, or truncated (no input left and no progress): not this format.
                if rc != Z_OK || (s.avail_in == 0 && produced == 0) { return nil }
            }
        }
    }

    // MARK: xz

    private static func xz(_ input: [UInt8]) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: lzma_stream_buffer_bound(input.count))
        var written = 0
        let rc = input.withUnsafeBufferPointer { i in
            out.withUnsafeMutableBufferPointer { o in
                lzma_easy_buffer_encode(4, LZMA_CHECK_CRC64, nil, i.baseAddress, i.count, o.baseAddress, &written, o.count)
            }
        }
        guard rc == LZMA_OK else { throw CompressionError("liblzma failed to compress (\(rc.rawValue))") }
        out.removeSubrange(written...)
        return out
    }

    private static func unxz(_ input: [UInt8], limit: Int) throws -> [UInt8]? {
        var s = ccompression_lzma_stream()
        // The decoder's own memory is bounded too (256 MiB: every preset's dictionary fits).
        // Freed on every path, a failed start included (lzma_end accepts a stream whose start failed).
        defer { lzma_end(&s) }
        guard lzma_auto_decoder(&s, 256 << 20, 0) == LZMA_OK else { throw CompressionError("liblzma could not start") }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: chunk)
        return try input.withUnsafeBufferPointer { i -> [UInt8]? in
            s.next_in = i.baseAddress
            s.avail_in = i.count
            while true {
                let rc = buffer.withUnsafeMutableBufferPointer { o -> lzma_ret in
                    s.next_out = o.baseAddress
                    s.avail_out = o.count
                    return lzma_code(&s, LZMA_FINISH)
                }
                let produced = chunk - s.avail_out
                out += buffer[0..<produced]
                if out.count > limit { throw tooLarge(limit) }
                if rc == LZMA_STREAM_END { return out }
                if rc != LZMA_OK || (s.avail_in == 0 && produced == 0) { return nil }
            }
        }
    }

    // MARK: lz4 frames

    private static func lz4Frame(_ input: [UInt8]) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: LZ4F_compressFrameBound(input.count, nil))
        let n = input.withUnsafeBufferPointer { i in
            out.withUnsafeMutableBufferPointer { o in LZ4F_compressFrame(o.baseAddress, o.count, i.baseAddress, i.count, nil) }
        }
        guard LZ4F_isError(n) == 0 else { throw CompressionError("liblz4 failed to compress") }
        out.removeSubrange(n...)
        return out
    }

    private static func unlz4(_ input: [UInt8], limit: Int) throws -> [UInt8]? {
        var context: OpaquePointer?
        guard LZ4F_isError(LZ4F_createDecompressionContext(&context, ccompression_lz4f_version())) == 0, let context else {
            throw CompressionError("liblz4 could not start")
        }
        defer { LZ4F_freeDecompressionContext(context) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: chunk)
        var position = 0
        return try input.withUnsafeBufferPointer { i -> [UInt8]? in
            while true {
                var produced = chunk
                var consumed = i.count - position
                let hint = buffer.withUnsafeMutableBufferPointer { o in
                    LZ4F_decompress(context, o.baseAddress, &produced, i.baseAddress.map { $0 + position }, &consumed, nil)
                }
                if LZ4F_isError(hint) != 0 { return nil }
                position += consumed
                out += buffer[0..<produced]
                if out.count > limit { throw tooLarge(limit) }
                if hint == 0 { return out }  // the frame is complete
                if position == i.count && produced == 0 { return nil }  // truncated
            }
        }
    }

    // MARK: zstd frames

    private static func zstdFrame(_ input: [UInt8]) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: ZSTD_compressBound(input.count))
        let n = input.withUnsafeBufferPointer { i in
            out.withUnsafeMutableBufferPointer { o in ZSTD_compress(o.baseAddress, o.count, i.baseAddress, i.count, 3) }
        }
        guard ZSTD_isError(n) == 0 else { throw CompressionError("libzstd failed to compress") }
        out.removeSubrange(n...)
        return out
    }

    private static func unzstd(_ input: [UInt8], limit: Int) throws -> [UInt8]? {
        guard let context = ZSTD_createDCtx() else { throw CompressionError("libzstd could not start") }
        defer { ZSTD_freeDCtx(context) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: chunk)
        return try input.withUnsafeBufferPointer { i -> [UInt8]? in
            var source = ZSTD_inBuffer(src: i.baseAddress, size: i.count, pos: 0)
            while true {
                var produced = 0
                let hint = buffer.withUnsafeMutableBufferPointer { o -> Int in
                    var sink = ZSTD_outBuffer(dst: o.baseAddress, size: o.count, pos: 0)
                    defer { produced = sink.pos }
                    return ZSTD_decompressStream(context, &sink, &source)
                }
                if ZSTD_isError(hint) != 0 { return nil }
                out += buffer[0..<produced]
                if out.count > limit { throw tooLarge(limit) }
                if hint == 0 { return out }  // the frame is complete
                if source.pos == source.size && produced == 0 { return nil }  // truncated
            }
        }
    }
}
