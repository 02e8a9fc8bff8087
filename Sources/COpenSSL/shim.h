#ifndef COPENSSL_SHIM_H
#define COPENSSL_SHIM_H
// OpenSSL 3.0 (Debian 12's libssl-dev), for TLS to Redis. Several calls are macros in the headers;
// they are wrapped here as functions Swift can call.
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

static inline long copenssl_set_sni(SSL *ssl, const char *name) { return SSL_set_tlsext_host_name(ssl, name); }
static inline long copenssl_set_mode(SSL *ssl, long mode) { return SSL_set_mode(ssl, mode); }
static inline long copenssl_ctx_set_min_tls12(SSL_CTX *ctx) { return SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION); }

static const long copenssl_mode_partial_write = SSL_MODE_ENABLE_PARTIAL_WRITE;
static const long copenssl_mode_moving_buffer = SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER;
static const int copenssl_error_none = SSL_ERROR_NONE;
static const int copenssl_error_ssl = SSL_ERROR_SSL;
static const int copenssl_error_want_read = SSL_ERROR_WANT_READ;
static const int copenssl_error_want_write = SSL_ERROR_WANT_WRITE;
static const int copenssl_error_syscall = SSL_ERROR_SYSCALL;
static const int copenssl_error_zero_return = SSL_ERROR_ZERO_RETURN;
static const int copenssl_verify_peer = SSL_VERIFY_PEER;
static const int copenssl_verify_none = SSL_VERIFY_NONE;
static const int copenssl_filetype_pem = SSL_FILETYPE_PEM;
static const long copenssl_v_ok = X509_V_OK;
static const long copenssl_v_hostname_mismatch = X509_V_ERR_HOSTNAME_MISMATCH;
static const long copenssl_v_ip_mismatch = X509_V_ERR_IP_ADDRESS_MISMATCH;
#endif
