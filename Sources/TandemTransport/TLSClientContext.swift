import COpenSSL
import TandemCache

#if canImport(Glibc)
import Glibc
#endif

/// An OpenSSL client context made from ``TLSClientSettings``: the trusted CAs and the client
/// certificate are loaded once, when the cache is built, so that a missing or bad file is a settings
/// error and not a failure of every connection. Its one owner is this object; `deinit` frees it.
package final class TLSClientContext: @unchecked Sendable {
    // Why @unchecked Sendable is safe: the SSL_CTX is configured completely in init and never changed
    // afterwards; OpenSSL allows SSL_new on one configured context from many threads at once (the
    // context's reference count and session cache are locked internally).
    let ctx: OpaquePointer
    package let settings: TLSClientSettings

    /// Builds the context. Throws a reason (naming the file) when a file cannot be used.
    package init(_ settings: TLSClientSettings) throws(TLSSetupError) {
        guard let method = TLS_client_method(), let c = SSL_CTX_new(method) else {
            throw TLSSetupError(reason: "OpenSSL could not make a TLS context: \(TLSClientContext.lastError())")
        }
        ctx = c
        self.settings = settings
        _ = copenssl_ctx_set_min_tls12(c)
        if let ca = settings.caFile {
            ERR_clear_error()
            if SSL_CTX_load_verify_locations(c, ca, nil) != 1 {
                throw TLSSetupError(reason: "cannot load the CA certificates from \(ca): \(TLSClientContext.lastError())")
            }
        } else if SSL_CTX_set_default_verify_paths(c) != 1 {
            throw TLSSetupError(reason: "cannot load the system's CA certificates: \(TLSClientContext.lastError())")
        }
        if let cert = settings.certificateFile {
            ERR_clear_error()
            if SSL_CTX_use_certificate_chain_file(c, cert) != 1 {
                throw TLSSetupError(reason: "cannot load the client certificate from \(cert): \(TLSClientContext.lastError())")
            }
            let key = settings.keyFile ?? cert
            if SSL_CTX_use_PrivateKey_file(c, key, copenssl_filetype_pem) != 1 {
                throw TLSSetupError(reason: "cannot load the client key from \(key) (is it the key of \(cert)?): \(TLSClientContext.lastError())")
            }
            if SSL_CTX_check_private_key(c) != 1 {
                throw TLSSetupError(reason: "the key in \(key) does not match the certificate in \(cert)")
            }
        } else if let key = settings.keyFile {
            throw TLSSetupError(reason: "a client key (\(key)) without a client certificate")
        }
        SSL_CTX_set_verify(c, settings.verifyPeer ? copenssl_verify_peer : copenssl_verify_none, nil)
    }

    deinit { SSL_CTX_free(ctx) }

    /// The oldest error on this thread's OpenSSL error queue, as text, and the queue emptied.
    static func lastError() -> String {
        let code = ERR_get_error()
        ERR_clear_error()
        guard code != 0 else { return "no detail from OpenSSL" }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// A TLS settings file or value that cannot be used.
package struct TLSSetupError: Error, Sendable {
    package let reason: String
}
