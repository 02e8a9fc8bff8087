#ifndef CCOMPRESSION_SHIM_H
#define CCOMPRESSION_SHIM_H
// zlib, liblzma, liblz4 (frame format) and libzstd from Debian 12, for the COMPRESSOR option
// (django-redis's compressors). Their init macros are wrapped as functions Swift can call.
#include <zlib.h>
#include <lzma.h>
#include <lz4frame.h>
#include <zstd.h>

static inline int ccompression_deflate_init(z_stream *s, int level, int window_bits) {
    return deflateInit2(s, level, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY);
}
static inline int ccompression_inflate_init(z_stream *s, int window_bits) {
    return inflateInit2(s, window_bits);
}
static inline lzma_stream ccompression_lzma_stream(void) {
    lzma_stream s = LZMA_STREAM_INIT;
    return s;
}
static inline unsigned ccompression_lz4f_version(void) { return LZ4F_VERSION; }
#endif
