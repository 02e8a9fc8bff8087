import Foundation
@_spi(Backend) @testable import TandemCache
import TandemTestSupport
import Testing

/// What django-redis's compressors wrote with CPython (Fixtures/make_pickle_corpus.py): each
/// compressor's output for the same input.
private let compressedByPython: [String: [UInt8]] = {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/compressed.json")
    do {
        let hex = try JSONDecoder().decode([String: String].self, from: try Data(contentsOf: url))
        return hex.mapValues { bytes(hex: $0) }
    } catch {
        Issue.record("\(url.path) did not load: \(error)")
        return [:]
    }
}()

/// The input every compressor in the fixture compressed.
private let fixtureInput = Array(String(repeating: "lorem ipsum ", count: 40).utf8)

@Suite struct CompressorTests {
    @Test(arguments: ValueCompressor.allCases)
    func readsWhatPythonCompressedAndRoundTrips(_ compressor: ValueCompressor) throws {
        let python = try #require(compressedByPython[compressor.rawValue])
        #expect(try compressor.decompress(python) == fixtureInput)
        var rng = SystemRandomNumberGenerator()
        let inputs: [[UInt8]] = [[], [1], fixtureInput, (0..<200_000).map { _ in UInt8.random(in: 0...255, using: &rng) },
                                 [UInt8](repeating: 7, count: 1 << 20)]
        for input in inputs {
            let packed = try compressor.compress(input)
            #expect(try compressor.decompress(packed) == input, "\(input.count) bytes")
        }
    }

    @Test func zlibWritesExactlyWhatPythonWrites() throws {
        #expect(try ValueCompressor.zlib.compress(fixtureInput) == compressedByPython["zlib"])
        #expect(try ValueCompressor.zstd.compress(fixtureInput) == compressedByPython["zstd"])
    }

    @Test(arguments: ValueCompressor.allCases)
    func aValueNotInTheFormatIsReadAsItIs(_ compressor: ValueCompressor) throws {
        for plain in [Array("42".utf8), Array("hello, this is not compressed at all".utf8), [0x80, 5, 0x4E, 0x2E]] {
            #expect(try compressor.decompress(plain) == nil)
        }
        // A damaged or cut value of the format is not decompressed either (django-redis reads it as it is).
        var packed = try compressor.compress(fixtureInput)
        #expect(try compressor.decompress(Array(packed.prefix(packed.count / 2))) == nil)
        packed[packed.count / 2] ^= 0xFF
        packed[packed.count / 2 + 1] ^= 0x55
        if let read = try compressor.decompress(packed) { #expect(read != fixtureInput || compressor == .lz4) }
    }

    @Test(arguments: ValueCompressor.allCases)
    func aValueThatWouldDecompressBeyondTheBoundIsAnError(_ compressor: ValueCompressor) throws {
        let bomb = try compressor.compress([UInt8](repeating: 0, count: 4 << 20))
        #expect(bomb.count < 1 << 20)
        #expect(throws: CompressionError.self) { try compressor.decompress(bomb, limit: 1 << 20) }
    }

    @Test func anUnknownCompressorIsRefusedNamingTheChoices() {
        #expect {
            _ = try ValueCompressor.parse("brotli", alias: "default")
        } throws: { error in
            guard let e = error as? CacheError, e.code == .invalidSetting, let field = e.field, let reason = e.reason else { return false }
            return field == "OPTIONS.COMPRESSOR" && reason.contains("\"zstd\"") && reason.contains("brotli")
        }
    }
}
